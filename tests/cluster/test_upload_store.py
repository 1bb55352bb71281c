"""POST /items keeps the item's photo durably before the item is indexed (cluster/rest.py), and a
full disk is told apart from a passing failure."""
import asyncio
import json

import pytest

import cluster.rest
import shards.files
from shards.errors import ShardUnavailable, StorageError, StorageFull

from ..shards.helpers import FullDisk


def test_a_photo_is_stored_whole_or_not_at_all(tmp_path, monkeypatch):
    path = cluster.rest._store_durably(tmp_path / "a.img", b"photo bytes")
    assert path.read_bytes() == b"photo bytes"

    monkeypatch.setattr(shards.files, "os", FullDisk())   # its fsync finds the disk full
    with pytest.raises(StorageFull, match="cannot store the uploaded photo: No space left on device"):
        cluster.rest._store_durably(tmp_path / "b.img", b"more")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.img"]


@pytest.mark.parametrize("exc,status,retry", [
    (StorageFull("write-ahead log append failed: No space left on device"), 507, None),   # wait for space
    (StorageError("shard /x is closed"), 503, "1"),                                        # passing: retry
    (ShardUnavailable("shard-001", "no answer within 5.0 s"), 503, "1"),
])
def test_a_full_disk_is_507_without_retry_after_and_other_storage_errors_503(exc, status, retry):
    r = asyncio.run(cluster.rest._ours(None, exc))
    assert r.status_code == status and r.headers.get("retry-after") == retry
    assert json.loads(r.body) == {"error": str(exc)}


def test_the_uploads_folder_is_made_durably_once(tmp_path, monkeypatch):
    """A photo fsync'd inside uploads/ is lost with it if a crash loses the folder's own entry."""
    import cluster.uploads
    synced = []
    monkeypatch.setattr(cluster.uploads, "fsync_dir", synced.append)
    folder = cluster.uploads.uploads_folder(tmp_path / "root")
    assert folder == tmp_path / "root" / "uploads" and folder.is_dir() and synced == [tmp_path / "root"]
    cluster.uploads.uploads_folder(tmp_path / "root")
    assert synced == [tmp_path / "root"]          # there already: nothing to sync
