"""POST /items keeps the item's photo durably before the item is indexed (cluster/rest.py)."""
import pytest

import cluster.rest
import shards.files
from shards.errors import StorageError

from ..shards.helpers import FullDisk


def test_a_photo_is_stored_whole_or_not_at_all(tmp_path, monkeypatch):
    path = cluster.rest._store_durably(tmp_path / "a.img", b"photo bytes")
    assert path.read_bytes() == b"photo bytes"

    monkeypatch.setattr(shards.files, "os", FullDisk())   # its fsync finds the disk full
    with pytest.raises(StorageError, match="cannot store the uploaded photo: No space left on device"):
        cluster.rest._store_durably(tmp_path / "b.img", b"more")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.img"]
