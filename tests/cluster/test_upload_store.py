"""POST /items keeps the item's photo durably before the item is indexed (cluster/rest.py)."""
import errno
import os

import pytest

import cluster.rest
from shards.errors import StorageError


def test_a_photo_is_stored_whole_or_not_at_all(tmp_path, monkeypatch):
    path = cluster.rest._store_durably(tmp_path / "a.img", b"photo bytes")
    assert path.read_bytes() == b"photo bytes"

    class FullDisk:   # rest's `os`: its fsync finds the disk full
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(cluster.rest, "os", FullDisk())
    with pytest.raises(StorageError, match="cannot store the uploaded photo: No space left on device"):
        cluster.rest._store_durably(tmp_path / "b.img", b"more")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.img"]
