"""Benchmarks of one shard: scan speed, filtered queries, memory, ingest, reopen.

Each function returns a JSON-able dict; `fashion-search bench ...` prints it.
Timings are the best of several repetitions (the usual micro-benchmark practice
on a shared machine), with medians beside them.
"""
from __future__ import annotations

import ctypes
import gc
import os
import statistics
import tempfile
import time

import numpy as np

from shards import kernels
from shards.query import Query
from shards.shard import Shard, ShardConfig

FIELDS = {  # a catalog shaped like the product data: field -> number of values
    "gender": 5, "masterCategory": 4, "subCategory": 45, "baseColour": 46,
    "season": 4, "usage": 8, "year": 12,
}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _timed(fn, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def synthetic_batch(rng, start, n, words, bins=64, n_categories=100, tokens=True):
    ids = list(range(start, start + n))
    codes = rng.integers(0, 2**64 - 1, (n, words), dtype=np.uint64, endpoint=True)
    hists = rng.random((n, bins)) ** 4
    attrs = None
    if tokens:
        cat = rng.integers(0, n_categories, n)
        cols = {f: rng.integers(0, v, n) for f, v in FIELDS.items()}
        attrs = [[f"articleType=a{cat[i]}"] + [f"{f}={f[0]}{cols[f][i]}" for f in FIELDS] for i in range(n)]
    return ids, codes, hists, attrs


def build_shard(rows, bits, path=None, n_categories=100, tokens=True, batch=20_000, seed=0, fsync=True):
    rng = np.random.default_rng(seed)
    shard = Shard(path, ShardConfig(bits=bits), fsync=fsync)
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        ids, codes, hists, attrs = synthetic_batch(rng, start, n, bits // 64, n_categories=n_categories,
                                                   tokens=tokens)
        shard.upsert(ids, codes, hists, attrs if tokens else [[] for _ in range(n)])
    return shard


def bench_scan(rows: int, bits: int, reps: int = 9) -> dict:
    """Unfiltered Hamming top-10 through Shard.search vs faiss IndexBinaryFlat, one thread."""
    import faiss
    faiss.omp_set_num_threads(1)
    shard = build_shard(rows, bits, tokens=False, fsync=False)
    shard.compact()
    block = shard.blocks[0]
    rng = np.random.default_rng(1)
    q = rng.integers(0, 2**64 - 1, bits // 64, dtype=np.uint64, endpoint=True)
    query = shard.prepare(Query(code=q, hist=np.ones(64), k=10, w_colour=0.0))
    index = faiss.IndexBinaryFlat(bits)
    index.add(block.codes.view(np.uint8))
    ours = shard.search(query)
    _, fi = index.search(q[None].view(np.uint8), 10)
    ours_t, ours_med = _timed(lambda: shard.search(query), reps)
    faiss_t, faiss_med = _timed(lambda: index.search(q[None].view(np.uint8), 10), reps)
    same = sorted(h.hamming for h in ours.hits) == sorted(
        int(np.bitwise_count(block.codes[i] ^ q).sum()) for i in fi[0])
    return {"rows": rows, "bits": bits, "ours_per_s": rows / ours_t, "faiss_per_s": rows / faiss_t,
            "ratio": faiss_t / ours_t, "ours_median_ms": ours_med * 1e3, "faiss_median_ms": faiss_med * 1e3,
            "same_distances": same, "simd": kernels.simd(), "threads": 1}


def bench_filtered(rows: int, selectivity: float, bits: int = 256, reps: int = 21, queries: int = 5) -> dict:
    """Category-filtered (+ one more attribute) top-10 vs faiss with an IDSelectorBitmap."""
    import faiss
    faiss.omp_set_num_threads(1)
    n_cat = max(1, round(1 / selectivity))
    shard = build_shard(rows, bits, n_categories=n_cat, fsync=False)
    shard.compact()
    # faiss gets the same codes in id order, and the same filter as a bitmap
    codes = np.zeros((rows, bits // 64), np.uint64)
    for b in shard.blocks:
        codes[b.keys.astype(np.int64)] = b.codes
    index = faiss.IndexBinaryFlat(bits)
    index.add(codes.view(np.uint8))
    rng = np.random.default_rng(2)
    ours_ms, faiss_ms, recalls, scanned = [], [], [], []
    for _ in range(queries):
        cat, season = f"articleType=a{rng.integers(n_cat)}", f"season=s{rng.integers(4)}"
        q = rng.integers(0, 2**64 - 1, bits // 64, dtype=np.uint64, endpoint=True)
        query = shard.prepare(Query(code=q, hist=np.ones(64), k=10, filters=(cat, season), w_colour=0.0))
        block = shard.blocks[shard.block_ids[cat]]
        rows_sel = np.frombuffer(block.postings[season].to_array(), np.uint32)
        sel_ids = block.keys[rows_sel].astype(np.int64)
        bitmap = np.zeros((rows + 7) // 8, np.uint8)
        np.bitwise_or.at(bitmap, sel_ids >> 3, (1 << (sel_ids & 7)).astype(np.uint8))
        params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(rows, faiss.swig_ptr(bitmap)))
        res = shard.search(query)
        fd, fi = index.search(q[None].view(np.uint8), 10, params=params)
        # exact truth: Hamming then id over the selected rows
        ham = np.bitwise_count(codes[sel_ids] ^ q).sum(axis=1)
        truth = set(sel_ids[np.lexsort((sel_ids, ham))[:10]].tolist())
        recalls.append(len(truth & {h.id for h in res.hits}) / len(truth))
        scanned.append(res.scanned)
        ours_ms.append(_timed(lambda: shard.search(query), reps)[0] * 1e3)
        faiss_ms.append(_timed(lambda: index.search(q[None].view(np.uint8), 10, params=params), reps // 3)[0] * 1e3)
    o, f = statistics.median(ours_ms), statistics.median(faiss_ms)
    return {"rows": rows, "selectivity": selectivity, "bits": bits, "ours_ms": o, "faiss_ms": f,
            "speedup": f / o, "recall": float(np.mean(recalls)), "scanned": float(np.mean(scanned)),
            "queries": queries}


def bench_memory(rows: int, bits: int = 256) -> dict:
    """Resident bytes per item: 1M int ids, 256-bit codes, 64-bin histograms, 8 attributes.

    `bytes_per_item` is the RSS growth of a fresh process that opens the shard from its
    directory, as every shard actor does when it starts or restarts. The process that
    built the shard is reported beside it: it also holds allocator arenas left over from
    the write batches' temporary Python objects (a fixed few tens of MB, not per item).
    """
    warm = Shard(None, ShardConfig(bits=bits))
    ids, codes, hists, attrs = synthetic_batch(np.random.default_rng(9), 0, 100, bits // 64)
    warm.upsert(ids, codes, hists, attrs)
    warm.search(Query(code=codes[0], hist=hists[0]))
    del warm, ids, codes, hists, attrs
    _trim()
    before = _rss()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        shard = build_shard(rows, bits, path=os.path.join(d, "s"), fsync=False)
        shard.compact()
        _trim()
        after = _rss()
        accounted = shard.stats()["bytes"] / rows
        shard.close()
        reopened = _reopened_rss(os.path.join(d, "s"))
    return {"rows": rows, "bits": bits, "hist_bins": 64, "attributes_per_item": 8,
            "bytes_per_item": reopened / rows, "building_process_bytes_per_item": (after - before) / rows,
            "accounted_bytes_per_item": accounted}


_REOPEN = """
import sys
from benchmarks.shard_bench import _rss, _trim
from shards.shard import Shard
_trim()
before = _rss()
shard = Shard(sys.argv[1])
_trim()
print(_rss() - before)
"""


def _reopened_rss(path: str) -> int:
    """RSS growth of a fresh interpreter when it opens the shard at `path`."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _REOPEN, path], capture_output=True, text=True, check=True, cwd=root)
    return int(out.stdout.strip().splitlines()[-1])


def bench_ingest(rows: int, bits: int = 256, batch: int = 10_000) -> dict:
    """Upserts per second with the write-ahead log fsync'd per batch, then reopen time."""
    rng = np.random.default_rng(3)
    batches = [synthetic_batch(rng, s, min(batch, rows - s), bits // 64) for s in range(0, rows, batch)]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        shard = Shard(os.path.join(d, "s"), ShardConfig(bits=bits))
        t = time.perf_counter()
        for ids, codes, hists, attrs in batches:
            shard.upsert(ids, codes, hists, attrs)
        ingest_s = time.perf_counter() - t
        wal = shard.stats()["wal_bytes"]
        shard.close()
        t = time.perf_counter()
        reopened = Shard(os.path.join(d, "s"))
        replay_s = time.perf_counter() - t
        t = time.perf_counter()
        reopened.compact()
        compact_s = time.perf_counter() - t
        reopened.close()
        t = time.perf_counter()
        again = Shard(os.path.join(d, "s"))
        reopen_s = time.perf_counter() - t
        assert len(again) == rows
    return {"rows": rows, "batch": batch, "ingest_items_per_s": rows / ingest_s, "wal_bytes": wal,
            "reopen_from_log_s": replay_s, "compact_s": compact_s, "reopen_from_snapshot_s": reopen_s}
