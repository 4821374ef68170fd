"""How the modules layer: kernels import nothing from the package, library
modules never import a command, and the imports between modules have no
cycle, so every module stands on the ones below it."""
import ast
import graphlib
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "fastconv"


def _fastconv_imports(path: Path) -> set[str]:
    """The fastconv modules ``path`` imports (``fastconv.x`` -> ``x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "fastconv":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("fastconv."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("fastconv."))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return {p.stem: _fastconv_imports(p) & modules for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def _commands() -> set[str]:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    return {target.split(":")[0].split(".")[1] for target in scripts.values()}


def test_kernels_import_nothing_from_the_package():
    offenders = [p.name for p in (REPO / "kernels").glob("*.py*")
                 if re.search(r"^\s*(from|import) fastconv", p.read_text(), re.M)]
    assert offenders == []


def test_no_library_module_imports_a_command():
    commands = _commands()
    assert {"train", "viz", "serve", "bench"} <= commands
    upward = {(module, imported) for module, imports in _graph().items() if module not in commands
              for imported in imports & commands}
    assert upward == set()


def test_the_imports_between_modules_have_no_cycle():
    graphlib.TopologicalSorter(_graph()).static_order()  # CycleError names the cycle


def test_each_command_module_is_named_for_its_command():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for command, target in scripts.items():
        module = target.split(":")[0].split(".")[1]
        assert command.removeprefix("fastconv-") in module or module == "interop_cli", (command, module)
