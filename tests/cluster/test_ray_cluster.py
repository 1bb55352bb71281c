"""The real thing on one machine: shard actors and the coordinator actor on Ray."""
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from cluster.ownership import OWNER, STALE_S
from cluster.runtime import open_cluster, shutdown_cluster
from cluster.shard_actor import NAMESPACE, actor_name
from shards.errors import InvalidInput
from shards.oracle import brute_force_search
from shards.query import Query
from shards.shard import ShardConfig

from ..shards.helpers import model_add, random_items, random_query

CFG = ShardConfig(bits=128, hist_bins=8)
EVERYTHING = Query(code=np.zeros(2, np.uint64), hist=np.ones(8), k=1000)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ray.init(num_cpus=2, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    c = open_cluster(tmp_path_factory.mktemp("storage"), shards=3, config=CFG, timeout_s=2.0)
    yield c
    try:
        shutdown_cluster()
    finally:   # always: a module after this one starts a Ray of its own
        ray.shutdown()


def test_one_ray_cluster_serves_one_storage_root(cluster, tmp_path):
    """A second root would get the first one's shard actors (their names are per Ray cluster): refused."""
    served = cluster.coordinator_call("root_path")
    with pytest.raises(InvalidInput, match=f"already serves the storage root {served}"):
        open_cluster(tmp_path / "another", shards=2, config=CFG)
    assert not (tmp_path / "another").exists()
    again = open_cluster(served, config=CFG)   # the same root attaches, as a second command does
    assert again.stats()["items"] == cluster.stats()["items"]
    again.close()
    owner = json.loads((Path(served) / OWNER).read_text())   # the coordinator's heartbeat names this Ray
    assert owner["ray"] == ray.get_runtime_context().gcs_address and time.time() - owner["time"] < STALE_S


@pytest.fixture(scope="module")
def model(cluster):
    rng = np.random.default_rng(0)
    m = {}
    ids, codes, hists, attrs = random_items(rng, 600, 2, 8, str_ids=True)
    cluster.upsert(ids, codes, hists, attrs)
    model_add(m, ids, codes, hists, attrs, 8)
    return m


def tuples(result):
    return [(h.id, h.score, h.hamming, h.colour_distance, h.matched) for h in result.hits]


def check_oracle(cluster, model, seed, n=20):
    rng = np.random.default_rng(seed)
    queries = [random_query(rng, 2, 8) for _ in range(n)]
    from shards.query import prepare
    for q, r in zip(queries, cluster.search_batch(queries)):
        want, level, _ = brute_force_search(model, prepare(q, 128, 8))
        assert tuples(r) == want and r.level == level and not r.partial


def test_results_equal_brute_force_before_and_after_rebalance(cluster, model):
    check_oracle(cluster, model, 1)
    report = cluster.rebalance(5)
    assert report["moved_buckets"] > 0 and report["moved_items"] > 0
    check_oracle(cluster, model, 2)
    stats = cluster.stats()
    assert stats["items"] == len(model) and len(stats["shards"]) == 5
    # each shard reports its actor's resident memory, more than its arrays' own bytes
    assert all(sh["rss_bytes"] > sh["bytes"] > 0 for sh in stats["shards"].values())
    cluster.rebalance(3)
    check_oracle(cluster, model, 3)


def test_hedged_searches_through_ray_equal_brute_force(cluster, model):
    """A photo's query and its runner-up category's search (models/hedge.py) in one batch, merged."""
    from models.hedge import answers, with_hedges
    from shards.query import prepare

    from ..models.test_hedge import hedged_oracle, hedged_pair
    rng = np.random.default_rng(11)
    pairs = [hedged_pair(rng, 2, 8) for _ in range(20)]
    qs, hs = [q for q, _ in pairs], [h if i % 3 else None for i, (_, h) in enumerate(pairs)]
    for q, h, (r, hits, rh) in zip(qs, hs, answers(cluster.search_batch(with_hedges(qs, hs)), hs)):
        want = hedged_oracle(model, prepare(q, 128, 8), h and prepare(h, 128, 8))
        assert [(x.id, x.score, x.hamming, x.colour_distance, x.matched) for x in hits] == want
        assert not r.partial and (rh is None) == (h is None)


def test_bad_input_is_a_clear_error_through_ray(cluster, model):
    with pytest.raises(InvalidInput, match="k must be"):
        cluster.search(Query(code=np.zeros(2, np.uint64), hist=np.ones(8), k=0))
    assert cluster.stats()["items"] == len(model)


def test_killing_a_shard_actor_loses_no_acknowledged_write(cluster, model):
    rng = np.random.default_rng(5)
    acked, errors, answers = dict(model), [], []
    stop = threading.Event()

    def writer():
        i = 50_000
        while not stop.is_set() and i < 50_300:  # the final check reads everything with k=1000
            ids, codes, hists, attrs = random_items(rng, 4, 2, 8, start=i)
            try:
                cluster.upsert(ids, codes, hists, attrs)
                model_add(acked, ids, codes, hists, attrs, 8)
            except Exception as exc:  # not acknowledged: may or may not be there
                errors.append(exc)
            i += 4
            time.sleep(0.01)

    def reader():
        while not stop.is_set():
            r = cluster.search(EVERYTHING)
            answers.append((time.monotonic(), r.partial))

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    victim = ray.get_actor(actor_name("shard-001"), namespace=NAMESPACE)
    killed_at = time.monotonic()
    ray.kill(victim, no_restart=False)
    # queries recover: a complete answer within 10 s of the kill
    deadline = killed_at + 10
    while time.monotonic() < deadline and not any(t > killed_at + 0.2 and not p for t, p in answers):
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert any(t > killed_at + 0.2 and not p for t, p in answers), "queries did not recover within 10 s"
    final = cluster.search(EVERYTHING)
    assert not final.partial
    found = {h.id for h in final.hits}
    assert set(acked) <= found                          # every acknowledged item is there
    assert len(found) == len(final.hits)                # and once
    assert cluster.stats()["items"] == len(found)


def test_racing_writes_during_rebalances_end_as_a_sequential_replay(cluster, model):
    """Four clients upsert and delete the same few ids while buckets move 3 -> 4 -> 3.

    Whatever order the cluster applied them in, the final state of each id must be what
    replaying the acknowledged operations one by one gives, in an order that keeps every
    operation after those that had finished before it began: so the final value of an id
    comes from one of its last operations (none began after it finished), never an older one.
    """
    from shards.errors import NotFound
    hot = [f"hot-{i}" for i in range(10)]
    done, log, lock = threading.Event(), [], threading.Lock()
    hist = np.ones((1, 8))

    def client(w):
        rng = np.random.default_rng(100 + w)
        n = 0
        while not done.is_set() or n < 30:
            item, tag = hot[rng.integers(len(hot))], (w << 20) | n
            t0 = time.monotonic()
            if rng.random() < 0.3:
                cluster.delete([item])
                kind = "delete"
            else:   # the payload says which operation wrote it: code, attribute and meta
                cluster.upsert([item], np.array([[tag, tag]], np.uint64), hist, [[f"articleType=w{w}"]],
                               [{"tag": tag}])
                kind = "upsert"
            with lock:
                log.append((t0, time.monotonic(), kind, item, tag))
            n += 1

    threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    moved = cluster.rebalance(4)["moved_items"] + cluster.rebalance(3)["moved_items"]
    done.set()
    for t in threads:
        t.join()
    assert moved > 0 and len(log) >= 120

    everything = cluster.search(EVERYTHING)
    listed = [h.id for h in everything.hits if str(h.id).startswith("hot-")]
    assert not everything.partial and len(listed) == len(set(listed))
    for item in hot:
        ops = [op for op in log if op[3] == item]
        last = [op for op in ops if not any(o[0] > op[1] for o in ops)]   # nothing began after it ended
        try:
            got = cluster.get(item)
        except NotFound:
            assert any(op[2] == "delete" for op in last), f"{item} gone, but its last operations were {last}"
            assert item not in listed
            continue
        tag = got["meta"]["tag"]
        writer = [op for op in last if op[2] == "upsert" and op[4] == tag]
        assert writer, f"{item} holds write {tag}, not one of its last operations {last}"
        assert got["code"].tolist() == [tag, tag] and got["attributes"] == [f"articleType=w{tag >> 20}"]
        assert item in listed
