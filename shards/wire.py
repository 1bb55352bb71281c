"""Queries and answers on the wire between processes: msgpack, not pickle.

A PreparedQuery pickled by Ray costs about a millisecond more per call than the
same query as a few hundred msgpack bytes, and msgpack executes nothing it reads.
An answer travels as its columns (shards/answer.py): a few raw buffers, not one
object per hit.
Decoding re-validates, so a damaged message is an InvalidInput, never a wrong scan.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from functools import lru_cache

import msgpack
import numpy as np

from .answer import Answer
from .codes import check_token
from .errors import InvalidInput
from .query import PreparedQuery, check_k

LIMITS = dict(max_bin_len=1 << 20, max_str_len=1 << 16, max_array_len=1 << 20, max_map_len=64)


@lru_cache(maxsize=1 << 14)
def _valid_token(token: str) -> str:
    return check_token(token)


def _check_token(token) -> str:
    """check_token, remembered: a batch repeats a small vocabulary's tokens thousands of times."""
    if not isinstance(token, str):
        raise InvalidInput(f"an attribute token is a string, got {token!r}")
    return _valid_token(token)


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
                _check_token(t)
            qs.append(PreparedQuery(code=code, qhist=qhist, k=check_k(k, max_k), required=tuple(req),
                                    filters=tuple(flt), optional=tuple(opt), w_hamming=float(wh),
                                    w_colour=float(wc), w_optional=float(wo)))
            levels.append(lv)
        return qs, levels
    except InvalidInput:
        raise
    except (ValueError, TypeError, msgpack.ExtraData) as exc:
        raise InvalidInput(f"malformed query message: {exc}") from exc


def encode_answer(a: Answer) -> bytes:
    """Only the hits travel, not the padding: a batch whose k differ stays small."""
    q, k = a.scores.shape
    hit = np.arange(k) < a.n[:, None]
    return msgpack.packb([q, k, a.scores[hit].tobytes(), a.keys[hit].tobytes(),
                          a.hamming[hit].astype(np.uint16).tobytes(), a.colour[hit].tobytes(),
                          a.matched[hit].tobytes(), a.n.tobytes(), a.levels.tobytes(), a.scanned.tobytes(),
                          [list(c) for c in a.counts], a.ids, a.metas, a.view], use_bin_type=True)


@contextmanager
def gc_paused():
    """No garbage collection while a big answer turns into objects (msgpack's own advice).

    An answer's metadata is one small dict per hit; with the collector on, thousands
    of new objects set off its full passes over every object of the process (decoding
    a 256-query answer of Hit lists took 60 ms instead of 8 in the cluster
    benchmark's driver).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def decode_answer(payload: bytes) -> Answer:
    try:
        with gc_paused():
            q, k, scores, keys, ham, colour, matched, n, levels, scanned, counts, ids, metas, view = \
                msgpack.unpackb(payload, raw=False, **LIMITS)

        n = np.frombuffer(n, np.int64)
        if len(n) != q or ((n < 0) | (n > k)).any():
            raise InvalidInput("an answer's hit counts disagree with its shape")
        hit = np.arange(k) < n[:, None]

        def grid(buf, dtype, pad):
            out = np.full((q, k), pad, dtype)
            out[hit] = np.frombuffer(buf, dtype)
            return out

        a = Answer(scores=grid(scores, np.float64, np.inf), keys=grid(keys, np.uint64, 0),
                   hamming=grid(ham, np.uint16, 0).astype(np.int64),  # codes have at most 4096 bits
                   colour=grid(colour, np.float64, 0), matched=grid(matched, np.uint64, 0), n=n,
                   ids=ids, metas=metas, levels=np.frombuffer(levels, np.int64), counts=[tuple(c) for c in counts],
                   scanned=np.frombuffer(scanned, np.int64), view=int(view))
        if not (len(a.levels) == len(a.scanned) == len(counts) == q) or len(ids) != len(metas) \
                or len(ids) != int(n.sum()):
            raise InvalidInput("an answer's columns disagree in length")
        return a
    except InvalidInput:
        raise
    except (ValueError, TypeError, msgpack.ExtraData) as exc:
        raise InvalidInput(f"malformed answer message: {exc}") from exc
