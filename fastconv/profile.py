"""Where a training step's time goes: mean milliseconds per step of each
part (indexing the batch, every layer's forward and backward, the loss, the
optimiser), measured with one clock whose laps follow each other, so the
parts add up to the step.

``fastconv-train --profile`` prints :meth:`StepProfile.table` after
training and puts :meth:`StepProfile.as_dict` in ``--metrics-out``. The
first step of each batch size is left out: there ``auto`` times the kernel
variants and Numba compiles, which is not what a step costs.
"""
from __future__ import annotations

import time


class _NoClock:
    """The clock of an unprofiled step: laps cost nothing."""

    def lap(self, name, phase):
        pass


NO_CLOCK = _NoClock()


class _StepClock:
    def __init__(self):
        self.laps = []
        self.start = self._last = time.perf_counter()

    def lap(self, name, phase):
        """Charge the time since the previous lap to ``name`` in ``phase``
        ("data", "forward", "loss", "backward" or "optimizer")."""
        now = time.perf_counter()
        self.laps.append((name, phase, now - self._last))
        self._last = now


class StepProfile:
    """Sums of the laps of every profiled step; see the module docstring."""

    def __init__(self):
        self.steps = 0
        self.images = 0
        self.step_seconds = 0.0
        self._seconds: dict[tuple[str, str], float] = {}
        self._batch_sizes: set[int] = set()
        self._clock = None

    def begin(self):
        """Start timing a step; returns its clock."""
        self._clock = _StepClock()
        return self._clock

    def end(self, batch_size: int) -> None:
        """Close the step begun last, one of ``batch_size`` images (kept
        unless it was the first of that size, a warm-up step)."""
        clock, self._clock = self._clock, None
        seconds = time.perf_counter() - clock.start
        if batch_size not in self._batch_sizes:
            self._batch_sizes.add(batch_size)
            return
        self.steps += 1
        self.images += batch_size
        self.step_seconds += seconds
        for name, phase, lap in clock.laps:
            self._seconds[(name, phase)] = self._seconds.get((name, phase), 0.0) + lap

    def _ms(self, name, phase) -> float:
        return 1e3 * self._seconds.get((name, phase), 0.0) / max(self.steps, 1)

    def layer_names(self) -> list[str]:
        """Names of the layers (or fused steps) in forward order."""
        names = []
        for name, phase in self._seconds:
            if phase in ("forward", "backward") and name not in names:
                names.append(name)
        return names

    def as_dict(self) -> dict:
        """``{"layers": [{"name", "forward_ms", "backward_ms"}], "data_ms",
        "loss_ms", "optimizer_ms", "step_ms", "steps", "images_per_second"}``."""
        return {
            "layers": [{"name": name, "forward_ms": self._ms(name, "forward"),
                        "backward_ms": self._ms(name, "backward")} for name in self.layer_names()],
            "data_ms": self._ms("data", "data"),
            "loss_ms": self._ms("loss", "loss"),
            "optimizer_ms": self._ms("optimizer", "optimizer"),
            "step_ms": 1e3 * self.step_seconds / max(self.steps, 1),
            "steps": self.steps,
            "images_per_second": self.images / self.step_seconds if self.step_seconds else 0.0,
        }

    def table(self) -> str:
        """The profile as a text table, one row per part, then the step."""
        report = self.as_dict()
        rows = [("part", "forward ms", "backward ms")]
        rows.append(("batch (index, cast)", f"{report['data_ms']:.3f}", ""))
        rows += [(layer["name"], f"{layer['forward_ms']:.3f}", f"{layer['backward_ms']:.3f}")
                 for layer in report["layers"]]
        rows.append(("loss (softmax cross-entropy)", f"{report['loss_ms']:.3f}", ""))
        rows.append(("optimizer step", "", f"{report['optimizer_ms']:.3f}"))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append("-" * len(lines[0]))
        lines.append(f"step: {report['step_ms']:.3f} ms mean over {report['steps']} steps "
                     f"(first step of each batch size left out), {report['images_per_second']:,.0f} img/s")
        return "\n".join(lines)
