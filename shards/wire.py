"""Queries and answers on the wire between processes: msgpack, not pickle.

A PreparedQuery pickled by Ray costs about a millisecond more per call than the
same query as a few hundred msgpack bytes, and msgpack executes nothing it reads.
Decoding re-validates, so a damaged message is an InvalidInput, never a wrong scan.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager

import msgpack
import numpy as np

from .codes import check_token
from .errors import InvalidInput
from .query import Hit, PreparedQuery, ShardResult, check_k

LIMITS = dict(max_bin_len=1 << 20, max_str_len=1 << 16, max_array_len=1 << 20, max_map_len=64)


def encode_queries(queries: list[PreparedQuery], levels: list) -> bytes:
    return msgpack.packb([[q.code.tobytes(), q.qhist.tobytes(), q.k, list(q.required), list(q.filters),
                           list(q.optional), q.w_hamming, q.w_colour, q.w_optional, lv]
                          for q, lv in zip(queries, levels)], use_bin_type=True)


def decode_queries(payload: bytes, bits: int, bins: int, max_k: int) -> tuple[list[PreparedQuery], list]:
    try:
        rows = msgpack.unpackb(payload, raw=False, **LIMITS)
        qs, levels = [], []
        for code, qh, k, req, flt, opt, wh, wc, wo, lv in rows:
            code = np.frombuffer(code, np.uint64)
            qhist = np.frombuffer(qh, np.uint8)
            if len(code) != bits // 64 or len(qhist) != bins:
                raise InvalidInput("query code or histogram of the wrong length")
            for t in (*req, *flt, *opt):
                check_token(t)
            qs.append(PreparedQuery(code=code, qhist=qhist, k=check_k(k, max_k), required=tuple(req),
                                    filters=tuple(flt), optional=tuple(opt), w_hamming=float(wh),
                                    w_colour=float(wc), w_optional=float(wo)))
            levels.append(lv)
        return qs, levels
    except InvalidInput:
        raise
    except (ValueError, TypeError, msgpack.ExtraData) as exc:
        raise InvalidInput(f"malformed query message: {exc}") from exc


def encode_results(results: list[ShardResult]) -> bytes:
    return msgpack.packb([[[list(h) for h in r.hits], r.level, list(r.relaxed), list(r.counts), r.scanned, r.view]
                          for r in results], use_bin_type=True)


@contextmanager
def gc_paused():
    """No garbage collection while a big answer turns into objects (msgpack's own advice).

    A batch answer is ~10k small objects; with the collector on, they set off its
    full passes over every object of the process, which made decoding a 256-query
    answer take 60 ms instead of 8 (median, in the cluster benchmark's driver).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def decode_results(payload: bytes) -> list[ShardResult]:
    out = []
    with gc_paused():
        for hits, level, relaxed, counts, scanned, view in msgpack.unpackb(payload, raw=False, **LIMITS):
            out.append(ShardResult(hits=tuple(Hit(i, k, s, h, c, tuple(m), meta) for i, k, s, h, c, m, meta in hits),
                                   level=level, relaxed=tuple(relaxed), counts=tuple(counts), scanned=scanned,
                                   view=view))
    return out
