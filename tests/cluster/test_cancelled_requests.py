"""A request that is given up on must not wedge the cluster. When a client goes away,
Ray Serve cancels its request and Ray cancels recursively: every actor call the
request's handler made. Cancelling a pending call from an async actor (the coordinator,
the web frontend) to a sync one (a shard) left that caller's queue to the shard stuck
for good: every later read or write of the shard through the coordinator timed out."""
import random
import time

import numpy as np
import ray

from cluster.runtime import COORDINATOR, open_cluster, shutdown_cluster
from cluster.shard_actor import NAMESPACE
from shards.shard import ShardConfig

from ..shards.helpers import random_items


def test_cancelled_coordinator_calls_leave_the_shards_answering(tmp_path):
    ray.init(num_cpus=2, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    try:
        c = open_cluster(tmp_path / "root", shards=2, config=ShardConfig(bits=128, hist_bins=8))
        ids, codes, hists, attrs = random_items(np.random.default_rng(0), 40, 2, 8)
        c.upsert(ids, codes, hists, attrs)
        coordinator = ray.get_actor(COORDINATOR, namespace=NAMESPACE)
        rng = random.Random(0)
        for _ in range(10):
            given_up = [coordinator.get.remote(i) for i in ids]
            time.sleep(rng.random() * 0.02)
            for ref in given_up:
                ray.cancel(ref)                 # recursive, as Serve cancels a request
            for i in ids:                       # every shard still answers, within the 5 s shard timeout
                assert c.get(i)["id"] == i
    finally:
        try:
            shutdown_cluster()
        finally:      # always: the next test starts a Ray of its own
            ray.shutdown()
