"""The coordinator actor restarted, then the whole Ray cluster stopped and started
again from the storage root: every acknowledged item is found, none twice."""
import json
import time

import numpy as np
import pytest
import ray

from cluster.ownership import OWNER, STALE_S
from cluster.runtime import COORDINATOR, open_cluster, shutdown_cluster
from shards.errors import InvalidInput
from cluster.shard_actor import NAMESPACE
from shards.query import Query
from shards.shard import ShardConfig

from ..shards.helpers import random_items

CFG = ShardConfig(bits=128, hist_bins=8)
EVERYTHING = Query(code=np.zeros(2, np.uint64), hist=np.ones(8), k=1000)


def found(cluster):
    r = cluster.search(EVERYTHING)
    ids = [h.id for h in r.hits]
    assert not r.partial and len(ids) == len(set(ids))
    return set(ids)


def test_restarts_lose_nothing(tmp_path):
    storage = tmp_path / "storage"
    rng = np.random.default_rng(0)
    ray.init(num_cpus=2, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    try:
        c = open_cluster(storage, shards=2, config=CFG)
        ids, codes, hists, attrs = random_items(rng, 300, 2, 8, str_ids=True)
        c.upsert(ids, codes, hists, attrs)
        c.rebalance(3)
        c.delete(ids[:10])
        acked = set(ids[10:])
        assert found(c) == acked

        # the coordinator dies; Ray restarts it and it reloads the placement map
        ray.kill(ray.get_actor(COORDINATOR, namespace=NAMESPACE), no_restart=False)
        more, codes2, hists2, attrs2 = random_items(rng, 50, 2, 8, start=5000)
        for _ in range(100):
            try:
                c.upsert(more, codes2, hists2, attrs2)
                break
            except Exception:
                time.sleep(0.2)
        acked |= set(more)
        assert found(c) == acked
        assert c.stats()["version"] > 1
    finally:
        try:
            shutdown_cluster()
        finally:      # always: the next test starts a Ray of its own
            ray.shutdown()
    assert not (storage / OWNER).exists()     # a clean stop gives the root up at once

    # everything stops; a new Ray on the same storage root finds it all again
    ray.init(num_cpus=2, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    try:
        # ... unless another Ray cluster's coordinator still beats there: refused, nothing touched
        other = {"ray": "203.0.113.7:6379", "host": "elsewhere", "pid": 1, "time": time.time()}
        (storage / OWNER).write_text(json.dumps(other))
        before = (storage / "placement.json").read_bytes()
        with pytest.raises(InvalidInput, match="served by the Ray cluster at 203.0.113.7:6379"):
            open_cluster(storage, shards=2, config=CFG)
        assert (storage / "placement.json").read_bytes() == before
        assert ray.util.list_named_actors() == []
        # a heartbeat older than STALE_S is a cluster that is gone: the root is free
        (storage / OWNER).write_text(json.dumps({**other, "time": time.time() - STALE_S - 1}))
        c = open_cluster(storage, shards=2, config=CFG)     # the saved map (3 shards) wins
        owner = json.loads((storage / OWNER).read_text())
        assert owner["ray"] == ray.get_runtime_context().gcs_address and time.time() - owner["time"] < STALE_S
        assert len(c.stats()["shards"]) == 3
        assert found(c) == acked
    finally:
        try:
            shutdown_cluster()
        finally:      # always: the next test starts a Ray of its own
            ray.shutdown()
