"""Storage the cluster cannot use. A shard whose directory cannot be opened (here: a
snapshot from a newer release) leaves the rest serving: the cluster opens, answers
`partial` naming that shard, and says why; once the directory is repaired, the next
command brings it back. A damaged placement map, and a node where the shared storage
root is not mounted, are clear errors that create or change nothing."""
import asyncio
from pathlib import Path

import numpy as np
import pytest
import ray

from cluster.cli import main
from cluster.health import cluster_health
from cluster.runtime import CoordinatorActor, open_cluster, shutdown_cluster
from cluster.shard_actor import NAMESPACE, check_root_here, shard_client, start_shard
from coordinator.placement import Placement
from shards.errors import ShardUnavailable, StorageError
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


def health() -> tuple[int, str, list]:
    """GET /health's verdict over the shard actors, as the REST front asks them."""
    clients = {n: shard_client(n) for n in ("shard-000", "shard-001")}
    code, body = asyncio.run(cluster_health(asyncio.sleep(0), lambda: clients, 5.0))
    return code, body["status"], sorted(body["unavailable"])


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
        with pytest.raises(ShardUnavailable, match="shard 'shard-001' unavailable"):   # its reason, across Ray
            c.get(sorted(on_001)[0])
        st = c.stats()
        assert st["unavailable"] == ["shard-001"] and "newer fashion-search" in st["why_unavailable"]["shard-001"]
        assert main(["stats", "--storage", str(root), "--json"]) == 1        # a monitor sees it
        assert health() == (200, "degraded", ["shard-001"])                  # so does GET /health

        set_format(root / "shard-001", 1)      # repaired (say, the newer release is back)
        c = open_cluster(root, shards=2, config=CFG)
        assert c.unavailable == {}
        r = c.search(EVERYTHING)
        assert not r.partial and sorted(h.id for h in r.hits) == sorted(ids)
        assert main(["stats", "--storage", str(root), "--json"]) == 0
        assert health() == (200, "ok", [])
    finally:
        try:
            shutdown_cluster()
        finally:      # always: the next test starts a Ray of its own
            ray.shutdown()


def test_a_damaged_placement_map_is_a_clear_error_and_is_left_as_it_is(tmp_path):
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
        try:
            shutdown_cluster()
        finally:      # always: the next test starts a Ray of its own
            ray.shutdown()


def test_an_actor_on_a_node_without_the_shared_root_refuses_to_start_empty(tmp_path):
    """What a node sees where the storage root is not mounted: an empty folder at its path.
    A shard there would start empty and take writes no other node sees."""
    unmounted = tmp_path / "mnt" / "fashion"
    unmounted.mkdir(parents=True)
    ray.init(num_cpus=2, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    try:
        shard = start_shard(str(unmounted), "shard-000", {"bits": 128, "hist_bins": 8})
        with pytest.raises(ray.exceptions.ActorDiedError, match="holds no cluster on .*mount the shared storage"):
            ray.get(shard.ready.remote(), timeout=60)
        assert list(unmounted.iterdir()) == []                 # nothing made there
        coordinator = CoordinatorActor.remote(str(unmounted), 2, None, 5.0, True)   # the driver saw a cluster
        with pytest.raises(ray.exceptions.ActorDiedError, match="holds no cluster on"):
            ray.get(coordinator.root_path.remote(), timeout=60)
        assert list(unmounted.iterdir()) == []
        with pytest.raises(StorageError):
            check_root_here(str(unmounted))
    finally:
        try:
            shutdown_cluster()
        finally:      # always: the next test starts a Ray of its own
            ray.shutdown()
