"""Python face of the fused scan kernel (`shards/_scan.c`).

`scan_batch(...)` accumulates the top-k of a batch of queries into per-query
heaps, over a table of tasks. A task is one block's rows (a range, or candidate
rows) for some of the batch's queries (its members); one call runs them all, so
a shard pays the call once per batch, not once per constraint set. Heaps are
(score, key) max-heaps, so ties break by id key and results are deterministic.

    blocks      sequence, by block id: (codes (N, W) uint64, keys (N,) uint64,
                alive (N,) uint8, hists (N, H) uint8); unused blocks may be None
    tasks       (T, 8) int64 rows [block, n, lo, hi, use_rows, check_alive, mlo, mhi]:
                the block's first n rows are valid; use_rows scans rows[lo:hi],
                else the row range [lo, hi); check_alive skips dead rows;
                members[mlo:mhi] are the task's queries
    rows        (R,) uint32 candidate rows of every use_rows task, concatenated
    members     (M,) int64 query indices of every task, concatenated
    bonuses     one per task: None, or (mhi - mlo, >= n) uint8, each member's
                optional-token count per row (a query has at most 64 tokens)
    q (Q, W) uint64, qh (Q, H) uint8, w_h, w_c, w_o (Q,) float64, kq (Q,) int64
    heaps       hs (Q, K) float64, hk (Q, K) uint64, hr, hh (Q, K) int64,
                hc (Q, K) float64, hn (Q,) int64; query j keeps kq[j] <= K entries

score = (w_h * ham * inv_bits - w_o * bonus) + w_c * colour_distance, evaluated
in exactly that order (the oracle in shards/oracle.py does the same in numpy).
A heap entry is (score hs, id key hk, location hr = block_id << 32 | row,
Hamming distance hh, colour distance hc). Every task is checked before any heap
is touched, so a bad table raises and changes nothing.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ._scan import allow_simd as _allow_simd
from ._scan import scan_batch as _scan_batch_c
from ._scan import simd

__all__ = ["scan_batch", "new_heaps", "simd", "simd_allowed", "TASK_COLUMNS", "NO_ROWS"]

TASK_COLUMNS = 8
NO_ROWS = np.zeros(0, np.uint32)


def scan_batch(blocks, tasks, rows, members, bonuses, q, qh, w_h, w_c, w_o, kq, inv_bits, heaps) -> None:
    _scan_batch_c(blocks, tasks, rows, members, bonuses, q, qh, w_h, w_c, w_o, kq, float(inv_bits), *heaps)


def new_heaps(nq: int, k: int):
    """(hs, hk, hr, hh, hc, hn): nq empty heaps of k entries."""
    return (np.full((nq, k), np.inf), np.zeros((nq, k), np.uint64), np.zeros((nq, k), np.int64),
            np.zeros((nq, k), np.int64), np.zeros((nq, k)), np.zeros(nq, np.int64))


@contextmanager
def simd_allowed(flag: bool):
    """Within the block, flag=False runs the portable scalar paths (tests check both against numpy).

    Process-wide: meant for tests, not for a serving process.
    """
    was = _allow_simd(flag)
    try:
        yield
    finally:
        _allow_simd(was)
