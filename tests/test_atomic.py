"""Atomic writes: a failed write leaves the old file and no temporary."""
import json

import pytest

from fastconv.atomic import write_json_atomically


def test_json_written_and_replaced(tmp_path):
    path = tmp_path / "m.json"
    write_json_atomically(path, {"epoch": 1})
    write_json_atomically(path, {"epoch": 2})
    assert json.loads(path.read_text()) == {"epoch": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "m.json"
    write_json_atomically(path, {"epoch": 1})
    with pytest.raises(TypeError):
        write_json_atomically(path, {"epoch": object()})  # not JSON: fails mid-write
    assert json.loads(path.read_text()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
