"""Every command and snippet in README.md, docs/*.md and bench/README.md runs
as written.

The fenced ```bash, ```sh and ```python blocks of each page are run in page
order, in one scratch folder per page, as a reader following the page would
run them; MNIST comes from $FASTCONV_DATA (the folder beside the repository,
``../shared/data/mnist``) and the download mirror points at a closed local
port, so nothing is fetched.

How each command line is proved; this is the whole classification:

* ``fastconv-*``: parsed by the command's own argument parser, so a wrong
  flag or value fails. Then
  - run as written: ``fastconv-explain``, ``fastconv-viz``,
    ``fastconv-export``, ``fastconv-import``, ``fastconv-exercise``, and
    ``fastconv-train`` with
    ``--epochs 1 --limit N``, N <= 5,000;
  - run smaller: ``fastconv-compare --epochs 1 --limit N`` (N <= 10,000)
    with ``--limit 2000 --test-limit 500`` (its shift test runs 17 times
    over the test digits);
  - parsed only: every other training (minutes to hours), ``fastconv-bench``
    (a benchmark), ``fastconv-serve`` (a server: it runs until stopped) and
    ``fastconv-check`` (it grades a file of the reader's).
    A parsed-only training leaves an untrained model of its architecture
    where it would have saved, so the commands after it run.
* ``python -c "..."``: run. ``python SCRIPT``, ``pytest PATH`` and
  ``jupyter lab PATH``: the files named must exist (running the suites is
  their own business; tests/test_notebooks.py runs the notebooks).
* Set-up (``pip``, ``python3 -m venv``, ``.``, ``apt-get``, ``export``):
  not run; this test runs inside the set-up.
* Python blocks: run, each in a fresh namespace. The blocks listed in
  :data:`FULL_TRAININGS` train on the whole data set; they run on its first
  images only.

A comment line right under a command, or under a ``print(...)`` call, is the
output the page promises: each must be a line of the real output, in order,
exactly (the same words; only the amount of space between them may differ).
Output that varies by nature (timings, a training's accuracy, anything that
depends on the machine) is never a promised line: a page shows it apart, as
"one run printed", in a fence of its own (```text), which this test does not
run.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
import os
import re
import shlex
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from fastconv import bench, check, compare, data, exercise, explain, interop_cli, models, serve, train, viz

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist"
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
PAGES = ("README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")), "bench/README.md")
LANGUAGES = {"bash": "bash", "sh": "bash", "python": "python"}

PARSE = {
    "fastconv-train": train.build_parser().parse_args,
    "fastconv-explain": explain.build_parser().parse_args,
    "fastconv-viz": viz.build_parser()[0].parse_args,
    "fastconv-compare": compare.build_parser().parse_args,
    "fastconv-bench": bench.parse_args,
    "fastconv-serve": serve.build_parser().parse_args,
    "fastconv-export": interop_cli.build_export_parser().parse_args,
    "fastconv-import": interop_cli.build_import_parser().parse_args,
    "fastconv-check": check.parse_args,
    "fastconv-exercise": exercise.build_parser().parse_args,
}
"""Each installed command's parser (for bench, with its checks after argparse)."""
ALWAYS_RUN = {"fastconv-explain", "fastconv-viz", "fastconv-export", "fastconv-import", "fastconv-exercise"}
NEVER_RUN = {"fastconv-bench": "a benchmark", "fastconv-serve": "a server that runs until stopped",
             "fastconv-check": "it grades the reader's own file"}
CHEAP_TRAINING_IMAGES = 5000
COMPARE_SMALLER = ["--limit", "2000", "--test-limit", "500"]
SET_UP = {"pip", "python3 -m venv", ".", "source", "apt-get", "export", "cd"}
FULL_TRAININGS = {"README.md": ["model.fit(x_train, y_train, epochs=2"]}
"""Python blocks (page: a line of each) that train on the whole data set."""
FULL_TRAINING_DATA = {"train": 6000, "test": 1000}
"""What those blocks get: the first 6,000 training images (so the last 5,000
still validate) and the first 1,000 test images."""
STAND_INS = {"torch-cnn.safetensors": lambda path: _save_safetensors(models.build("cnn"), path)}
"""Files the pages read but that come from outside them (PyTorch's weights):
made from an untrained model of the same layout when missing."""


def _save_safetensors(model, path):
    from fastconv import interop

    interop.save_safetensors(model, path)


# ------------------------------------------------------------------ reading the pages


@dataclasses.dataclass
class Block:
    page: str
    line: int  # of the first line inside the fence, 1-based
    language: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclasses.dataclass
class Command:
    page: str
    line: int
    words: list  # after the environment assignments
    env: dict
    expected: list  # the output lines promised under it

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def __str__(self):
        return shlex.join(self.words)


def blocks(page: str) -> list[Block]:
    """The fenced blocks of ``page`` in a language this test runs."""
    found, current = [], None
    for number, line in enumerate((REPO / page).read_text().splitlines(), 1):
        fence = re.match(r"^```\s*(\S*)\s*$", line)
        if current is None and fence:
            current = Block(page, number + 1, fence.group(1), "")
        elif current is not None and line.startswith("```"):
            if current.language in LANGUAGES:
                current.language = LANGUAGES[current.language]
                found.append(current)
            current = None
        elif current is not None:
            current.text += line + "\n"
    assert current is None, f"{page}: a fence opened at line {current.line - 1} is never closed"
    return found


def _comment(line: str) -> str | None:
    """The text of a full-line comment (``# text``), else None."""
    match = re.match(r"^\s*#(?: (.*)|$)", line)
    return None if match is None else (match.group(1) or "")


def commands(block: Block) -> list[Command]:
    """The command lines of a shell block, continuation lines joined and
    ``&&`` chains split, each with the comment lines right under it."""
    lines = block.text.splitlines()
    found, i = [], 0
    while i < len(lines):
        start, text = i, lines[i]
        while text.endswith("\\"):
            i += 1
            text = text[:-1] + " " + lines[i]
        i += 1
        if not text.strip() or _comment(text) is not None:
            continue
        expected = []
        while i < len(lines) and _comment(lines[i]) is not None:
            expected.append(_comment(lines[i]))
            i += 1
        words = shlex.split(text, comments=True)
        chain = [[]]
        for word in words:
            if word == "&&":
                chain.append([])
            else:
                chain[-1].append(word)
        for j, part in enumerate(chain):
            env = {}
            while part and re.match(r"^[A-Z_][A-Z0-9_]*=", part[0]):
                name, _, value = part.pop(0).partition("=")
                env[name] = value
            found.append(Command(block.page, block.line + start, part, env,
                                 expected if j == len(chain) - 1 else []))
    return found


def printed_lines(block: Block) -> list[str]:
    """The comment lines right under each ``print(...)`` call of a Python
    block, in order: what the page says it prints."""
    lines = block.text.splitlines()
    expected = []
    calls = sorted(node.end_lineno for node in ast.walk(ast.parse(block.text))
                   if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print")
    for end in calls:
        i = end  # the line after the call, 0-based
        while i < len(lines) and _comment(lines[i]) is not None:
            expected.append(_comment(lines[i]))
            i += 1
    return expected


def all_commands():
    return [c for page in PAGES for b in blocks(page) if b.language == "bash" for c in commands(b)]


def fastconv_commands():
    return [c for c in all_commands() if c.words and c.words[0].startswith("fastconv-")]


# ------------------------------------------------------------------ checking output

def same_line(expected: str, actual: str) -> bool:
    """Whether ``actual`` prints what ``expected`` promises: the same words,
    character for character, with any amount of space between them."""
    return expected.split() == actual.split()


def check_output(where, expected, output: str):
    """Each expected line matches an output line, in order."""
    lines = output.splitlines()
    at = 0
    for line in expected:
        while at < len(lines) and not same_line(line, lines[at]):
            at += 1
        assert at < len(lines), f"{where}: the page promises the line {line!r}; the output was:\n{output}"
        at += 1


# ------------------------------------------------------------------ running


def parse(command: Command):
    """The command's arguments as its own parser reads them (a test failure
    naming the place in the docs if it refuses them)."""
    name, argv = command.words[0], command.words[1:]
    assert name in PARSE, f"{command.where}: {name} is not a fastconv command"
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return PARSE[name](argv)
    except SystemExit:
        pytest.fail(f"{command.where}: `{command}` is refused by its parser:\n{err.getvalue()}")


def how_to_run(command: Command, args) -> tuple[list | None, str]:
    """(the argv to run, or None to parse only; why)."""
    name, argv = command.words[0], command.words[1:]
    if name in ALWAYS_RUN:
        return argv, "cheap"
    if name == "fastconv-train":
        if args.epochs == 1 and args.limit is not None and args.limit <= CHEAP_TRAINING_IMAGES:
            return argv, "a small training"
        return None, "a full training"
    if name == "fastconv-compare":
        if args.epochs == 1 and args.limit is not None and args.limit <= 10000:
            return argv + COMPARE_SMALLER, "run smaller"
        return None, "a full comparison"
    return None, NEVER_RUN[name]


def run_main(where, name, argv) -> str:
    main = {ep.name: ep for ep in entry_points(group="console_scripts")}[name].load()
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code in (0, None), f"{where}: `{name} {shlex.join(argv)}` exited with {code}:\n{err.getvalue()}"
    return out.getvalue()


def run_python(where, source) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        exec(compile(source, where, "exec"), {"__name__": "__main__"})
    return out.getvalue()


def run_command(command: Command, monkeypatch) -> str:
    """Prove one command line; returns how, for the log."""
    words = command.words
    if not words or words[0] in SET_UP or " ".join(words[:3]) in SET_UP:
        return "set-up, not run"
    for name, value in command.env.items():
        monkeypatch.setenv(name, value)
    if words[0].startswith("fastconv-"):
        args = parse(command)
        argv, why = how_to_run(command, args)
        for path in [getattr(args, a, None) for a in ("checkpoint", "weights")]:
            if path in STAND_INS and not os.path.exists(path):
                STAND_INS[path](path)
        if argv is None:
            _stand_in_for(words[0], args)
            return f"parsed only: {why}"
        output = run_main(command.where, words[0], argv)
        if argv == words[1:]:
            check_output(command.where, command.expected, output)
        return f"run: {why}" + ("" if argv == words[1:] else f", as {shlex.join(argv)}")
    elif words[0] in ("python", "python3") and words[1:2] == ["-c"]:
        check_output(command.where, command.expected, run_python(command.where, words[2]))
        return "run"
    elif words[0] in ("python", "python3"):
        assert (REPO / words[1]).is_file(), f"{command.where}: no script {words[1]}"
        return "the script exists"
    elif words[0] == "pytest":
        for path in _pytest_paths(words[1:]):
            assert (REPO / path).exists(), f"{command.where}: `{command}` names {path}, which does not exist"
        return "the paths it names exist"
    elif words[:2] == ["jupyter", "lab"]:
        for path in words[2:]:
            assert (REPO / path).exists(), f"{command.where}: `{command}` names {path}, which does not exist"
        return "a server: the paths it names exist"
    else:
        pytest.fail(f"{command.where}: `{command}`: this test does not know how to prove {words[0]}; "
                    "teach it (see the module docstring)")


def _stand_in_for(name, args):
    """Where a parsed-only training would have saved, an untrained model of
    the same architecture, so that the commands after it can run."""
    if name != "fastconv-train" or args.resume:
        return
    path = f"fastconv-{args.model}.npz" if args.save is None else args.save
    if path and not os.path.exists(path):
        models.build(args.model, batch_norm=args.batch_norm).save(path)


def _pytest_paths(argv):
    takes_value = {"-k", "-m", "-p", "-o", "-c"}
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif not word.startswith("-"):
            yield word.split("::")[0]


def _cut(load_dataset):
    """``load_dataset`` giving the first images only (:data:`FULL_TRAINING_DATA`)."""
    def cut(*args, **kwargs):
        full = load_dataset(*args, **kwargs)
        n, m = FULL_TRAINING_DATA["train"], FULL_TRAINING_DATA["test"]
        return dataclasses.replace(full, x_train=full.x_train[:n], y_train=full.y_train[:n],
                                   x_test=full.x_test[:m], y_test=full.y_test[:m])
    return cut


def is_full_training(block: Block) -> bool:
    return any(marker in block.text for marker in FULL_TRAININGS.get(block.page, ()))


# ------------------------------------------------------------------ the tests


@pytest.fixture
def mnist_dir():
    if not all((MNIST / name).is_file() for name in MNIST_FILES):
        message = f"the MNIST files are not in {MNIST}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: the docs must be proved there)")
        pytest.skip(message)
    return MNIST


@pytest.mark.parametrize("page", PAGES)
def test_the_page_runs_as_written(page, mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCONV_DATA", str(mnist_dir))
    monkeypatch.setenv("FASTCONV_MNIST_URL", "http://127.0.0.1:9/")  # a closed port: never the network
    monkeypatch.chdir(tmp_path)
    for block in blocks(page):
        if block.language == "bash":
            for command in commands(block):
                how = run_command(command, monkeypatch)
                print(f"{command.where}: `{command}`: {how}")  # shown when the test fails
        else:
            full = is_full_training(block)
            with monkeypatch.context() as patch:
                if full:
                    patch.setattr(data, "load_dataset", _cut(data.load_dataset))
                output = run_python(block.where, block.text)
            check_output(block.where, printed_lines(block), output)
            print(f"{block.where}: Python block: run" + (f" on {FULL_TRAINING_DATA}" if full else ""))


@pytest.mark.parametrize("command", fastconv_commands(), ids=lambda c: f"{c.where} {c.words[0]}")
def test_every_fastconv_command_line_parses(command):
    parse(command)


def test_every_command_of_the_docs_is_an_installed_one():
    installed = {ep.name for ep in entry_points(group="console_scripts") if ep.name.startswith("fastconv-")}
    assert set(PARSE) == installed
    assert {c.words[0] for c in fastconv_commands()} <= installed


def test_the_full_trainings_listed_are_still_in_the_pages():
    python_blocks = [b for page in PAGES for b in blocks(page) if b.language == "python"]
    for page, markers in FULL_TRAININGS.items():
        for marker in markers:
            assert any(b.page == page and marker in b.text for b in python_blocks), (page, marker)


def test_the_pages_hold_the_blocks_this_test_proves():
    langs = {page: [b.language for b in blocks(page)] for page in PAGES}
    assert langs["docs/concepts.md"].count("python") >= 10
    assert "bash" in langs["README.md"] and "python" in langs["README.md"]
    assert "bash" in langs["bench/README.md"]
    promised = [c.expected for c in all_commands() if c.words[:2] == ["python", "-c"]]
    assert ["26 28 13 5"] in promised


def test_a_wrong_flag_fails_the_parse():
    bad = Command("doc.md", 1, ["fastconv-train", "--epochz", "1"], {}, [])
    with pytest.raises(pytest.fail.Exception, match="doc.md:1: `fastconv-train --epochz 1` is refused"):
        parse(bad)


def test_command_lines_are_split_as_a_shell_would():
    block = Block("doc.md", 10, "bash",
                  "python3 -m venv .venv && . .venv/bin/activate\n"
                  "FASTCONV_NUM_THREADS=1 fastconv-bench \\\n  --repeat 3   # one thread\n"
                  "python -c \"print(1 + 1)\"\n# 2\n")
    found = commands(block)
    assert [c.words for c in found] == [["python3", "-m", "venv", ".venv"], [".", ".venv/bin/activate"],
                                        ["fastconv-bench", "--repeat", "3"], ["python", "-c", "print(1 + 1)"]]
    assert found[2].env == {"FASTCONV_NUM_THREADS": "1"} and found[2].line == 11
    assert found[3].expected == ["2"] and found[2].expected == []


def test_promised_output_is_the_comment_under_each_print():
    block = Block("doc.md", 1, "python",
                  "for k in (1, 2):\n    print(k,\n          k * 0.5)\n# 1 0.5\n# 2 1.0\n# this line too\n"
                  "x = 3\n# a remark, not output\n")
    assert printed_lines(block) == ["1 0.5", "2 1.0", "this line too"]


@pytest.mark.parametrize("expected, actual, same", [
    ("26 28 13 5", "26 28 13 5", True),
    ("26 28 13 5", "26  28 13 5 ", True),                 # the space between words may differ
    ("26 28 13 5", "26 28 13 6", False),
    ("unmoved: 0.3% unseen", "unmoved: 0.2% unseen", False),   # a last digit is a difference
    ("0 px: 0.00  0.58", "0 px: 0.01  0.58", False),
    ("[[1 2 0 0]", "[[1 2 0 0]", True),
    ("[0. 0. 0.]", "[ 0. -0. -0.]", False),              # -0. is printed, so the page shows it
    ("['0.00083', '1.1e-05']", "['0.00083', '1.2e-05']", False),
    ("cnn rows [26 27]", "cnn rows [26 27 28]", False),
    ("True True True", "True False True", False),
    ("2 3", "23", False),                                # space that separates words matters
])
def test_output_lines_match_exactly(expected, actual, same):
    assert same_line(expected, actual) is same


def test_output_must_come_in_order():
    check_output("doc.md:1", ["a 1", "b 2"], "x\na 1\ny\nb 2\n")
    with pytest.raises(AssertionError, match="promises the line 'a 1'"):
        check_output("doc.md:1", ["b 2", "a 1"], "a 1\nb 2\n")
