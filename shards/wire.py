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

import msgpack
import numpy as np

from .answer import Answer
from .errors import InvalidInput
from .query import PreparedQuery, check_tokens

LIMITS = dict(max_bin_len=1 << 20, max_str_len=1 << 16, max_array_len=1 << 20, max_map_len=64)


def encode_queries(queries: list[PreparedQuery], levels: list) -> bytes:
    """A batch as columns: one buffer each for codes, histograms, k and weights, and each
    distinct token list once (a batch repeats a few categories' lists many times)."""
    lists: dict[tuple, int] = {}
    idx = np.fromiter((lists.setdefault(t, len(lists)) for q in queries for t in (q.required, q.filters, q.optional)),
                      np.int32, 3 * len(queries))
    n = len(queries)
    codes = np.stack([q.code for q in queries]).tobytes() if n else b""
    hists = np.stack([q.qhist for q in queries]).tobytes() if n else b""
    weights = np.fromiter((w for q in queries for w in (q.w_hamming, q.w_colour, q.w_optional, q.scan_budget)),
                          np.float64, 4 * n)
    ints = np.fromiter((v for q in queries for v in (q.k, q.widen)), np.int64, 2 * n)
    return msgpack.packb([n, codes, hists, ints.tobytes(), weights.tobytes(), list(levels),
                          [list(t) for t in lists], idx.tobytes()], use_bin_type=True)


def _column(buf, dtype, n: int, width: int, what: str) -> np.ndarray:
    arr = np.frombuffer(buf, dtype)
    if len(arr) != n * width:
        raise InvalidInput(f"query {what} of the wrong length")
    return arr.reshape(n, width)


def decode_queries(payload: bytes, bits: int, bins: int, max_k: int) -> tuple[list[PreparedQuery], list]:
    try:
        n, codes, hists, ks, ws, levels, lists, idx = msgpack.unpackb(payload, raw=False, **LIMITS)
        if not isinstance(n, int) or n < 0 or not isinstance(levels, list) or len(levels) != n:
            raise InvalidInput("a query batch's columns disagree in length")
        codes = _column(codes, np.uint64, n, bits // 64, "code")
        hists = _column(hists, np.uint8, n, bins, "histogram")
        ints = _column(ks, np.int64, n, 2, "k and widen")
        ks, widen = ints[:, 0], ints[:, 1]
        ws = _column(ws, np.float64, n, 4, "weights")
        idx = _column(idx, np.int32, n, 3, "token lists")
        if n and (ks.min() < 1 or ks.max() > max_k):
            raise InvalidInput(f"k must be an integer in [1, {max_k}]")
        if not np.isfinite(ws).all() or (ws < 0).any() or (ws[:, 3] > 1).any():
            raise InvalidInput("query weights must be finite and >= 0, a scan budget at most 1")
        if not isinstance(lists, list) or (n and (idx.min() < 0 or idx.max() >= len(lists))):
            raise InvalidInput("a query refers to a token list the message lacks")
        lists = [check_tokens("tokens", t) for t in lists]
        qs = [PreparedQuery(code=code, qhist=qhist, k=k, required=lists[r], filters=lists[f], optional=lists[o],
                            w_hamming=wh, w_colour=wc, w_optional=wo, widen=wd, scan_budget=b)
              for code, qhist, k, wd, (r, f, o), (wh, wc, wo, b)
              in zip(codes, hists, ks.tolist(), widen.tolist(), idx.tolist(), ws.tolist())]
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
                          [list(c) for c in a.counts], a.ids, a.metas, a.view, a.size], use_bin_type=True)


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
            q, k, scores, keys, ham, colour, matched, n, levels, scanned, counts, ids, metas, view, size = \
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
                   scanned=np.frombuffer(scanned, np.int64), view=int(view), size=int(size))
        if not (len(a.levels) == len(a.scanned) == len(counts) == q) or len(ids) != len(metas) \
                or len(ids) != int(n.sum()):
            raise InvalidInput("an answer's columns disagree in length")
        return a
    except InvalidInput:
        raise
    except (ValueError, TypeError, msgpack.ExtraData) as exc:
        raise InvalidInput(f"malformed answer message: {exc}") from exc
