"""Benchmarks of the cluster on Ray: query overhead over in-process, batch throughput, rebalance."""
from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import threading
import time

import numpy as np
import ray

from cluster.runtime import open_cluster, ray_environment, shutdown_cluster
from coordinator.protocol import LocalShardClient
from coordinator.router import Router
from shards.query import Query
from shards.shard import Shard, ShardConfig

from .shard_bench import _timed, synthetic_batch

N_CAT = 100


def _queries(rng, n, bits):
    out = []
    for _ in range(n):
        out.append(Query(code=rng.integers(0, 2**64 - 1, bits // 64, dtype=np.uint64, endpoint=True),
                         hist=rng.random(64), k=10,
                         required=(f"articleType=a{rng.integers(N_CAT)}", f"season=s{rng.integers(4)}")))
    return out


def _fill(upsert, rows, bits, batch=20_000):
    rng = np.random.default_rng(0)
    for start in range(0, rows, batch):
        ids, codes, hists, attrs = synthetic_batch(rng, start, min(batch, rows - start), bits // 64,
                                                   n_categories=N_CAT)
        upsert(ids, codes, hists, attrs)


@contextlib.contextmanager
def _local_cluster(n_shards: int, bits: int):
    """A cluster of n_shards on a fresh local Ray and a temporary storage root, stopped after."""
    with tempfile.TemporaryDirectory() as storage:
        ray_environment()
        ray.init(include_dashboard=False, log_to_driver=False, namespace="fashion-search")
        try:
            yield open_cluster(storage, shards=n_shards, config=ShardConfig(bits=bits)), storage
        finally:
            shutdown_cluster()
            ray.shutdown()


def _latencies(fn, queries):
    out = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def _median_seconds(fn, reps: int = 5) -> float:
    return _timed(fn, reps)[1]


def _in_process_sharded(rows, n_shards, bits, queries, batch_queries):
    """The cluster's query path without Ray: the same Router over n in-process shards, one after another.

    The gap between this and one big shard is the cost of sharding (each shard pays
    every query's fixed work); the gap between this and the cluster is Ray's.
    """
    shards = [Shard(None, ShardConfig(bits=bits), fsync=False) for _ in range(n_shards)]

    def upsert(ids, codes, hists, attrs):
        owner = np.asarray(ids) % n_shards
        for j, s in enumerate(shards):
            rows_j = np.flatnonzero(owner == j)
            s.upsert([ids[r] for r in rows_j], codes[rows_j], hists[rows_j], [attrs[r] for r in rows_j])

    _fill(upsert, rows, bits)
    for s in shards:
        s.compact()
    router = Router({f"s{j}": LocalShardClient(f"s{j}", s) for j, s in enumerate(shards)}, 0, bits=bits,
                    hist_bins=shards[0].config.hist_bins)
    loop = asyncio.new_event_loop()
    try:
        lat = _latencies(lambda q: loop.run_until_complete(router.search_batch([q])), queries)
        batch_s = _median_seconds(lambda: loop.run_until_complete(router.search_batch(batch_queries)))
    finally:
        loop.close()
    return lat, batch_s


async def _empty_round(c) -> None:
    """One call to every shard actor that does nothing (`ready`), through the router's loop and handles."""
    await asyncio.gather(*(client.handle.ready.remote() for client in c.router.clients.values()))


def bench_cluster(rows: int, n_shards: int, bits: int = 256, n_queries: int = 300, batch: int = 256,
                  job: int = 8192) -> dict:
    """`batch` queries in one call; `job` queries in one call, which the router sends in chunks."""
    rng = np.random.default_rng(1)
    queries = _queries(rng, n_queries, bits)
    batch_queries = _queries(rng, batch, bits)
    job_queries = _queries(rng, job, bits)

    local = Shard(None, ShardConfig(bits=bits), fsync=False)
    _fill(local.upsert, rows, bits)
    local.compact()
    local_lat = _latencies(local.search, queries)
    local.search_batch(batch_queries)
    local_batch_s = _median_seconds(lambda: local.search_batch(batch_queries))
    local_job_s = _median_seconds(lambda: local.search_batch(job_queries), reps=3)
    local = None  # free its memory before the sharded copy is built
    sharded_lat, sharded_batch_s = _in_process_sharded(rows, n_shards, bits, queries, batch_queries)

    with _local_cluster(n_shards, bits) as (c, _):
        t = time.perf_counter()
        _fill(c.upsert, rows, bits)
        ingest_s = time.perf_counter() - t
        for q in queries[:20]:
            c.search(q)  # warm up the actors' code paths
        lat = _latencies(c.search, queries)
        empty = _latencies(lambda _: c._loop.run(_empty_round(c), 10), queries)
        c.search_batch(batch_queries)
        batch_s = _median_seconds(lambda: c.search_batch(batch_queries))
        job_s = _median_seconds(lambda: c.search_batch(job_queries), reps=3)
        shards = c.stats()["shards"].values()
    p50, p99 = statistics.median(lat), float(np.percentile(lat, 99))
    lp50 = statistics.median(local_lat)
    empty_p50 = statistics.median(empty)
    return {"rows": rows, "shards": n_shards, "bits": bits, "queries": n_queries,
            "p50_ms": p50, "p99_ms": p99, "single_process_p50_ms": lp50,
            "single_process_p99_ms": float(np.percentile(local_lat, 99)), "overhead_ms": p50 - lp50,
            # the floor under overhead_ms: the same fan-out of calls that do nothing, in the same run
            "empty_fanout_p50_ms": empty_p50, "p50_over_empty_fanout_ms": p50 - empty_p50,
            "batch": batch, "batch_qps": batch / batch_s, "single_process_batch_qps": batch / local_batch_s,
            "batch_ratio": local_batch_s / batch_s, "cluster_ingest_items_per_s": rows / ingest_s,
            # a batch job: `job` queries in one call, which the router sends in chunks
            # (Router.chunk, Router.window), against one process answering all of them at once
            "job": job, "job_qps": job / job_s, "single_process_job_qps": job / local_job_s,
            "job_ratio": local_job_s / job_s,
            "in_process_sharded_p50_ms": statistics.median(sharded_lat),
            "in_process_sharded_batch_qps": batch / sharded_batch_s,
            # the shard actors' resident memory (Python and Ray's runtime included) and the
            # shard arrays' own bytes, per item
            "shard_rss_bytes_per_item": sum(st["rss_bytes"] for st in shards) / rows,
            "shard_accounted_bytes_per_item": sum(st["bytes"] for st in shards) / rows}


def bench_rebalance(rows: int, n_from: int, n_to: int, bits: int = 256) -> dict:
    """Resize n_from -> n_to shards while a client queries continuously and checks every answer."""
    with _local_cluster(n_from, bits) as (c, _):
        _fill(c.upsert, rows, bits)
        # the probe: a query whose true answer is known exactly (a category of ~rows/N_CAT items,
        # k above its size) so each answer can be checked for misses and duplicates
        probe = Query(code=np.zeros(bits // 64, np.uint64), hist=np.ones(64), k=1000,
                      filters=("articleType=a7", "season=s1"))
        truth = {h.id for h in c.search(probe).hits}
        stats = {"queries": 0, "failed": 0, "missing": 0, "duplicates": 0, "partial": 0}
        stop = threading.Event()

        def client():
            while not stop.is_set():
                try:
                    r = c.search(probe)
                except Exception:
                    stats["failed"] += 1
                    continue
                got = [h.id for h in r.hits]
                stats["queries"] += 1
                stats["partial"] += int(r.partial)
                stats["duplicates"] += len(got) - len(set(got))
                stats["missing"] += len(truth - set(got))

        th = threading.Thread(target=client)
        th.start()
        report = c.rebalance(n_to)
        stop.set()
        th.join()
        after = c.stats()
    return {"rows": rows, "from": n_from, "to": n_to, "moved": report["moved_items"],
            "moved_buckets": report["moved_buckets"], "seconds": report["seconds"],
            "items_after": after["items"], "probe_size": len(truth), **stats}


def bench_similar(rows: int, n_shards: int, bits: int = 256, k: int = 12) -> dict:
    """`fashion-search similar-items` over a synthetic catalog: every item's k similar items, timed."""
    with _local_cluster(n_shards, bits) as (c, storage):
        _fill(c.upsert, rows, bits)
        report = c.similar_items(f"{storage}/similar.jsonl", k, 0.3, log=lambda s: None)
    return {"rows": rows, "shards": n_shards, "categories": N_CAT, **{key: report[key] for key in (
        "items", "k", "seconds", "items_per_s", "partial_lines", "rereads")}}


def bench_export(rows: int, n_shards: int, bits: int = 256) -> dict:
    """`fashion-search export` over a synthetic catalog: every item paged out of the shards, timed."""
    with _local_cluster(n_shards, bits) as (c, storage):
        _fill(c.upsert, rows, bits)
        report = c.export(f"{storage}/catalog.jsonl", log=lambda s: None)
        t0 = time.perf_counter()
        page = c.coordinator_call("list_items", None, 100)   # GET /items's default page
        first_page_ms = (time.perf_counter() - t0) * 1e3
    return {"rows": rows, "shards": n_shards, "items": report["items"], "seconds": report["seconds"],
            "items_per_s": round(report["items"] / report["seconds"], 1), "pages": -(-report["items"] // 10_000),
            "first_page_of_100_ms": round(first_page_ms, 1), "first_page_items": len(page["items"])}

