"""prune-uploads removes exactly the old photos no item records, and nothing when the catalog cannot be read whole."""
import asyncio
import os
import time

import numpy as np
import pytest

from cluster.prune_uploads import prune_uploads
from coordinator.listing import every_item
from shards.errors import ShardUnavailable

from ..coordinator.test_coordinator import make
from ..shards.helpers import random_items

HOUR = 3600.0


def photo(folder, i: int, age_s: float) -> str:
    name = f"{i:032x}.img"
    (folder / name).write_bytes(b"x" * (100 + i))
    t = time.time() - age_s
    os.utime(folder / name, (t, t))
    return name


def setup(tmp_path):
    coord = make(tmp_path, 3)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    ids, codes, hists, attrs = random_items(np.random.default_rng(2), 60, 2, 8)
    metas = [{"title": f"t{i}"} for i in ids]
    kept = []
    for j in range(0, 40, 2):   # an item every other photo: new records, and absolute ones from before
        name = photo(uploads, j, 2 * HOUR)
        metas[j]["image"] = f"uploads/{name}" if j % 4 else f"/some/old/root/uploads/{name}"
        kept.append(name)
        metas[j + 1]["image"] = f"/catalog/images/{j}.jpg"      # a catalog's own photo
    asyncio.run(coord.upsert(ids, codes, hists, attrs, metas))
    orphans = [photo(uploads, 100 + j, 2 * HOUR) for j in range(5)]
    young = [photo(uploads, 200 + j, 60) for j in range(3)]       # a write may be storing it now
    (uploads / "notes.txt").write_text("not a photo of ours")
    return coord, uploads, kept, orphans, young


def test_only_old_photos_that_no_item_records_go(tmp_path):
    coord, uploads, kept, orphans, young = setup(tmp_path)
    items = lambda: every_item(lambda cursor, limit: asyncio.run(coord.list_items(cursor, limit)))  # noqa: E731
    dry = prune_uploads(items(), tmp_path, HOUR, dry_run=True)
    assert dry["orphans"] == 5 and dry["removed"] == 0 and sorted(dry["orphan_names"]) == orphans
    assert len(list(uploads.iterdir())) == len(kept) + 5 + 3 + 1
    report = prune_uploads(items(), tmp_path, HOUR)
    assert report["items"] == 60 and report["removed"] == 5 and report["too_young"] == 3
    assert report["bytes_freed"] == sum(100 + 100 + j for j in range(5))
    assert sorted(p.name for p in uploads.iterdir()) == sorted(kept + young + ["notes.txt"])
    assert report["items_whose_photo_is_missing"] == 0
    assert prune_uploads(items(), tmp_path, HOUR)["removed"] == 0


def test_a_shard_that_does_not_answer_stops_it_before_anything_goes(tmp_path):
    coord, uploads, kept, orphans, young = setup(tmp_path)
    before = sorted(p.name for p in uploads.iterdir())

    async def unavailable(*a):
        raise ShardUnavailable("shard-001", "its node died")
    coord.clients["shard-001"].list_items = unavailable
    with pytest.raises(ShardUnavailable):
        prune_uploads(every_item(lambda c, n: asyncio.run(coord.list_items(c, n))), tmp_path, HOUR)
    assert sorted(p.name for p in uploads.iterdir()) == before
