"""Python started in the repository root finds the source folder fastconv/
first. After `pip install -e .` that folder is the package and the kernels
are found through the editable install's import hook; after `pip install .`
there are no compiled kernels there, and the package must still work, using
the installed copy, so the README's examples run as written from a fresh
clone."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastconv

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def readme_python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def run_from_the_root(code, **env):
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "FASTCONV_NUM_THREADS": "1", **env}, timeout=600)


def test_from_fastconv_import_ops_works_in_the_repository_root():
    result = run_from_the_root("import fastconv, fastconv.kernels; from fastconv import ops; "
                               "print(fastconv.__file__); print(ops.__file__)")
    assert result.returncode == 0, result.stderr
    init_file, ops_file = result.stdout.split()
    assert Path(init_file).parent == REPO / "fastconv"  # the shadowing really happened
    assert Path(ops_file).parent == Path(fastconv.__file__).parent  # yet ops is the installed one


def test_readme_30_second_example_runs_from_the_root():
    example = readme_python_blocks()[0]
    assert "from fastconv import ops" in example
    result = run_from_the_root(example)
    assert result.returncode == 0, result.stderr
    assert "('cython', 'im2col')" in result.stdout


def test_source_folder_without_an_installed_copy_says_what_to_do(tmp_path):
    source = tmp_path / "clone" / "fastconv"
    source.mkdir(parents=True)
    with pytest.raises(ImportError, match=r"run `pip install -e \.` \(or `pip install \.`\) in .*clone,"):
        fastconv._installed_copy(str(source), [str(tmp_path / "clone"), str(tmp_path / "empty")])


def test_source_folder_uses_the_installed_copy_found_past_it(tmp_path):
    source = tmp_path / "clone" / "fastconv"
    source.mkdir(parents=True)
    (source / "__init__.py").write_text("")
    installed = tmp_path / "site-packages" / "fastconv"
    (installed / "kernels").mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    search = [str(tmp_path / "clone"), str(tmp_path / "site-packages")]
    assert fastconv._installed_copy(str(source), search) == [str(installed)]
