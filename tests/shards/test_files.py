"""Small files replaced whole (shards/files.py): the old content or the new, never half, no leftovers."""
import pytest

import shards.files
from shards.files import write_atomically

from .helpers import FullDisk


def test_a_replacement_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "placement.json"
    write_atomically(target, '{"version": 1}')
    write_atomically(target, b'{"version": 2}')
    assert target.read_text() == '{"version": 2}'

    monkeypatch.setattr(shards.files, "os", FullDisk())
    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, '{"version": 3}')
    assert target.read_text() == '{"version": 2}'
    assert [p.name for p in tmp_path.iterdir()] == ["placement.json"]
