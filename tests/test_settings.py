"""Every FASTCONV_* variable is read in fastconv.settings; the cache folder
is decided there once, for downloads and ``auto`` choices alike."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastconv import autotune, data, settings

PACKAGE = Path(settings.__file__).parent
README = Path(__file__).resolve().parents[1] / "README.md"  # the checkout's, wherever the package is installed


def test_a_cache_folder_with_a_tilde_is_the_home_folder_for_every_use(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("FASTCONV_CACHE", "~/c")
    assert settings.cache_dir() == tmp_path / "c"
    assert autotune.cache_path() == tmp_path / "c" / "autotune.json"
    assert data._cache_dir("mnist") == tmp_path / "c" / "mnist"


def test_tuning_with_a_tilde_cache_creates_no_folder_named_tilde(tmp_path):
    # Reproduced before the fix: a folder literally named "~" appeared in
    # the working directory.
    script = ("import numpy as np; from fastconv import ops; "
              "ops.max_pool2d(np.zeros((2, 1, 4, 4), np.float32), 2)")
    env = {"HOME": str(tmp_path / "home"), "FASTCONV_CACHE": "~/cache", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True, timeout=300)
    assert not (tmp_path / "~").exists()
    assert (tmp_path / "home" / "cache" / "autotune.json").is_file()


def test_blank_values_count_as_unset(monkeypatch):
    monkeypatch.setenv("FASTCONV_ISA", "  ")
    monkeypatch.setenv("FASTCONV_DEBUG", "0")
    assert settings.isa_build() is None and settings.debug() is False
    monkeypatch.setenv("FASTCONV_DEBUG", "1")
    assert settings.debug() is True


def test_no_module_but_settings_reads_the_environment():
    readers = []
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        if path.name != "settings.py" and re.search(r"os\.environ(?!\.setdefault)|os\.getenv", text):
            readers.append(path.name)
    assert readers == []


def test_the_readme_table_lists_every_variable():
    text = README.read_text()
    table = text[text.index("## Environment variables"):]
    for name in settings.VARIABLES:
        assert f"`{name}" in table, name


def test_an_unknown_mirror_variable_is_refused():
    with pytest.raises(ValueError, match="FASTCONV_OTHER_URL is not one of"):
        settings.download_url("FASTCONV_OTHER_URL")
