"""A shard whose directory cannot be opened (here: a snapshot from a newer release) leaves
the rest of the cluster serving: it opens, answers `partial` naming that shard, and says
why; once the directory is repaired, the next command brings the shard back."""
from pathlib import Path

import numpy as np
import ray

from cluster.runtime import open_cluster, shutdown_cluster
from cluster.shard_actor import NAMESPACE
from shards.query import Query
from shards.shard import Shard, ShardConfig
from shards.snapshot import read_snapshot, write_snapshot

from ..shards.helpers import random_items

CFG = ShardConfig(bits=128, hist_bins=8)
EVERYTHING = Query(code=np.zeros(2, np.uint64), hist=np.ones(8), k=1000)


def set_format(shard_dir: Path, fmt: int) -> None:
    newest = sorted(shard_dir.glob("snapshot-*.msgpack"))[-1]
    doc = read_snapshot(newest)
    doc["format"] = fmt
    write_snapshot(shard_dir, int(newest.stem.split("-")[1]), doc)


def test_a_shard_that_cannot_open_leaves_the_others_serving_until_it_is_repaired(tmp_path):
    root = tmp_path / "root"
    ray.init(num_cpus=2, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    try:
        c = open_cluster(root, shards=2, config=CFG)
        ids, codes, hists, attrs = random_items(np.random.default_rng(0), 120, 2, 8)
        c.upsert(ids, codes, hists, attrs)
        shutdown_cluster()                    # the actors stop; the files stay
        s = Shard(root / "shard-001")
        on_001 = set(s.ids())
        s.compact()
        s.close()
        set_format(root / "shard-001", 2)

        c = open_cluster(root, shards=2, config=CFG)
        assert "written by a newer fashion-search" in c.unavailable["shard-001"]
        r = c.search(EVERYTHING)
        assert r.partial and r.missing == ["shard-001"]
        assert {h.id for h in r.hits} == set(ids) - on_001 and on_001
        st = c.stats()
        assert st["unavailable"] == ["shard-001"] and "newer fashion-search" in st["why_unavailable"]["shard-001"]

        set_format(root / "shard-001", 1)      # repaired (say, the newer release is back)
        c = open_cluster(root, shards=2, config=CFG)
        assert c.unavailable == {}
        r = c.search(EVERYTHING)
        assert not r.partial and sorted(h.id for h in r.hits) == sorted(ids)
    finally:
        shutdown_cluster()
        ray.shutdown()


def test_a_damaged_placement_map_is_a_clear_error_and_is_left_as_it_is(tmp_path):
    import pytest

    from coordinator.placement import Placement
    from shards.errors import StorageError
    root = tmp_path / "root"
    root.mkdir()
    Placement.initial(2).save(root)
    (root / "placement.json").write_text('{"version": 3, "n_buck')     # cut short
    ray.init(num_cpus=2, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(StorageError, match="cannot run: .*unreadable placement map"):
            open_cluster(root, shards=2, config=CFG)
        assert (root / "placement.json").read_text() == '{"version": 3, "n_buck'
    finally:
        shutdown_cluster()
        ray.shutdown()
