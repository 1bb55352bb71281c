"""Three Ray nodes on this machine (ray.cluster_utils.Cluster): shards spread over
nodes, a node removed, its shards back on the survivors from the storage root."""
import threading
import time

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster as RayTestCluster

from cluster.chaos import wait_until_schedulable
from cluster.runtime import open_cluster, shutdown_cluster
from shards.query import Query
from shards.shard import ShardConfig

from ..shards.helpers import random_items

CFG = ShardConfig(bits=128, hist_bins=8)
EVERYTHING = Query(code=np.zeros(2, np.uint64), hist=np.ones(8), k=1000)
FAST_FAILURE_DETECTION = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                          "health_check_failure_threshold": 4}


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    rc = RayTestCluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "_system_config": FAST_FAILURE_DETECTION})
    workers = [rc.add_node(num_cpus=1) for _ in range(2)]
    rc.wait_for_nodes()
    ray.init(address=rc.address, namespace="fashion-search", log_to_driver=False)
    wait_until_schedulable([w.node_id for w in workers])    # else the shards may all land on the head
    yield rc, workers, tmp_path_factory.mktemp("shared-storage")
    try:
        shutdown_cluster()
    finally:   # always: a module after this one starts a Ray of its own, and this one's address file goes
        ray.shutdown()
        rc.shutdown()


def shard_nodes(cluster):
    return {name: info["node"] for name, info in cluster.coordinator_call("ready")["shards"].items()}


def test_node_loss_partial_then_full_recovery(nodes):
    rc, workers, storage = nodes
    cluster = open_cluster(storage, shards=6, config=CFG, timeout_s=0.5)
    placed = shard_nodes(cluster)
    assert len(set(placed.values())) >= 2, f"shards not spread: {placed}"

    rng = np.random.default_rng(0)
    ids, codes, hists, attrs = random_items(rng, 500, 2, 8)
    cluster.upsert(ids, codes, hists, attrs)
    acked = set(ids)

    # the worker node that holds the most shards goes away
    worker_ids = {w.node_id: w for w in workers}
    counts = {}
    for node in placed.values():
        if node in worker_ids:
            counts[node] = counts.get(node, 0) + 1
    victim = max(counts, key=counts.get)
    lost = sorted(s for s, n in placed.items() if n == victim)
    # queries run from before the node goes until after its shards are back: a restart on a
    # survivor can be quicker than remove_node itself, so a loop started after it may miss the outage
    outcomes, errors = [], []   # after the removal: "partial", "full" (every item) or "short" (a miss)
    removed, stop = threading.Event(), threading.Event()

    def probe():
        while not stop.is_set():
            try:
                r = cluster.search(EVERYTHING)
            except Exception as exc:  # a query must answer, partial or not, never raise
                errors.append(repr(exc))
            else:
                if r.partial and not set(r.missing) <= set(placed):
                    errors.append(f"unknown shards named missing: {r.missing}")
                got = {h.id for h in r.hits}
                outcome = "partial" if r.partial else "full" if got == acked else "short"
                if removed.is_set() or outcome != "full":
                    outcomes.append(outcome)
            time.sleep(0.02)

    def back_after_outage():
        return "partial" in outcomes and outcomes[-1] == "full"

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    time.sleep(0.2)
    rc.remove_node(worker_ids[victim])
    removed.set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not back_after_outage():
        time.sleep(0.1)
    stop.set()
    prober.join(30)
    assert not errors, errors[:3]
    assert "short" not in outcomes, "a full (non-partial) answer missed items"
    assert "partial" in outcomes, "no query saw the outage (queries run every 20 ms from before the node went)"
    assert outcomes[-1] == "full", "the lost shards did not come back"
    placed_after = shard_nodes(cluster)
    assert all(placed_after[s] != victim for s in lost)
    # writes work again and every acknowledged item is found
    ids2, codes2, hists2, attrs2 = random_items(rng, 50, 2, 8, start=10_000)
    cluster.upsert(ids2, codes2, hists2, attrs2)
    final = cluster.search(EVERYTHING)
    assert not final.partial and {h.id for h in final.hits} == acked | set(ids2)
