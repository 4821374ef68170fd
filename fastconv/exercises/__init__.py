"""The graded exercises of ``fastconv-exercise``, in the order a learner
does them. Each is a stub file in this folder, whose docstring says what
to write, the shapes, a hint and the ``fastconv-check`` command(s) that
grade it; this index names them and holds those commands (the tests check
that each stub states the same ones).

The stubs are package data, copied out by ``fastconv-exercise start N
DIR``; nothing imports them.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Check:
    """One ``fastconv-check FILE:function --op op [options]`` of an exercise."""

    function: str
    op: str
    options: tuple[str, ...] = ()

    def argv(self, path) -> list[str]:
        """The arguments of ``fastconv-check`` for the file at ``path``."""
        return [f"{path}:{self.function}", "--op", self.op, *self.options]

    def command(self, path) -> str:
        return "fastconv-check " + " ".join(self.argv(path))


@dataclass(frozen=True)
class Exercise:
    number: int
    file: str
    title: str
    checks: tuple[Check, ...]

    def stub(self) -> str:
        """The stub's text, instructions first."""
        return resources.files(__name__).joinpath(self.file).read_text()

    def instructions(self) -> str:
        """The stub's docstring: what to write, shapes, hint, grading."""
        text = self.stub()
        return text.split('"""')[1].strip()


EXERCISES = (
    Exercise(1, "conv2d_naive.py", "the convolution forward pass, as plain loops",
             (Check("conv2d", "conv2d"),)),
    Exercise(2, "out_size.py", "output-size arithmetic: how many times a window fits",
             (Check("out_size", "out_size"),)),
    Exercise(3, "max_pool.py", "max pooling, forward and backward",
             (Check("max_pool2d", "max_pool2d"), Check("max_pool2d_backward", "max_pool2d_backward"))),
    Exercise(4, "conv2d_backward.py", "the convolution backward pass: dx, dw, db",
             (Check("conv2d_backward", "conv2d_backward"),)),
    Exercise(5, "im2col.py", "im2col, and the convolution as one matrix product",
             (Check("im2col", "im2col"), Check("conv2d", "conv2d"))),
    Exercise(6, "conv2d_prange.py", "a parallel Numba convolution that beats the naive loops",
             (Check("conv2d", "conv2d", ("--faster-than", "numba/naive")),)),
)
"""Every exercise, numbered from 1."""


def exercise(number: int) -> Exercise:
    """Exercise ``number``; ValueError naming the valid numbers otherwise."""
    for found in EXERCISES:
        if found.number == number:
            return found
    raise ValueError(f"no exercise {number}; choose from 1 to {len(EXERCISES)} (fastconv-exercise list)")
