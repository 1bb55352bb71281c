"""Python face of the fused scan kernel (`shards/_scan.c`).

`scan(...)` accumulates the top-k of nq queries over the rows of one block into
per-query heaps; heaps are (score, key) max-heaps, so ties break by id key and
results are deterministic. Shapes:

    codes (N, W) uint64     keys (N,) uint64     alive (N,) uint8
    hists (N, H) uint8      rows (m,) int64 (used when use_rows, else [lo, hi))
    q (nq, W) uint64        qh (nq, H) uint8     bonus (nq, N) float64 (use_bonus)
    w_h, w_c, w_o (nq,) float64 weights          inv_bits = 1 / B
    hs (nq, k) float64, hk (nq, k) uint64, hr (nq, k) int64, hh (nq, k) int64,
    hc (nq, k) float64, hn (nq,) int64

score = (w_h * ham * inv_bits - w_o * bonus) + w_c * colour_distance, evaluated
in exactly that order (the oracle in shards/oracle.py does the same in numpy).
A heap entry is (score hs, id key hk, location hr = block_id << 32 | row,
Hamming distance hh, colour distance hc).
"""
from __future__ import annotations

import numpy as np

from ._scan import scan as _scan_c
from ._scan import simd

__all__ = ["scan", "new_heaps", "simd", "EMPTY_ROWS", "NO_BONUS"]

EMPTY_ROWS = np.zeros(0, np.int64)
NO_BONUS = np.zeros((0, 0), np.float64)


def scan(codes, keys, alive, check_alive, rows, use_rows, lo, hi, block_id,
         q, qh, hists, bonus, use_bonus, w_h, w_c, w_o, inv_bits, heaps) -> None:
    hs, hk, hr, hh, hc, hn = heaps
    _scan_c(codes, keys, alive, bool(check_alive), rows, bool(use_rows), int(lo), int(hi),
            int(block_id), q, qh, hists, bonus, bool(use_bonus), w_h, w_c, w_o, float(inv_bits),
            hs, hk, hr, hh, hc, hn)


def new_heaps(nq: int, k: int):
    """(hs, hk, hr, hh, hc, hn): nq empty heaps of k entries."""
    return (np.full((nq, k), np.inf), np.zeros((nq, k), np.uint64), np.zeros((nq, k), np.int64),
            np.zeros((nq, k), np.int64), np.zeros((nq, k)), np.zeros(nq, np.int64))

