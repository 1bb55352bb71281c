"""A shard's answer to a batch of queries, column by column.

A router merges one such answer per shard for every batch. As arrays, the merge is
a few numpy calls and the message a few buffers; one Hit object per candidate cost
more than the scan itself (benchmarks/RESULTS.md, cluster). `results()` turns an
answer into `Shard.search_batch`'s per-query ShardResults, the documented shape.

Row i is query i: its hits best first (score, then id key) in the first n[i]
columns, then padding (score +inf). `ids` and `metas` run over the hits only,
query after query. Bit j of `matched` is the query's j-th token
(`PreparedQuery.tokens`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .query import Hit, PreparedQuery, ShardResult


@dataclass(frozen=True, eq=False)
class Answer:
    scores: np.ndarray      # (Q, K) float64
    keys: np.ndarray        # (Q, K) uint64 id keys
    hamming: np.ndarray     # (Q, K) int64
    colour: np.ndarray      # (Q, K) float64
    matched: np.ndarray     # (Q, K) uint64 bit masks over each query's tokens
    n: np.ndarray           # (Q,) int64 hits per query
    ids: list               # one per hit: the string id, or None where the id is the int key
    metas: list             # one per hit: the item's small metadata
    levels: np.ndarray      # (Q,) int64 relaxation level answered
    counts: list            # per query: candidates at levels 0.. (see ShardResult.counts)
    scanned: np.ndarray     # (Q,) int64 codes scanned
    view: int               # placement version of the shard's view
    size: int = 0           # items the shard answers for (a scan budget is a share of their sum)

    @staticmethod
    def empty(view: int) -> "Answer":
        z = np.zeros((0, 1))
        return Answer(scores=z, keys=z.astype(np.uint64), hamming=z.astype(np.int64), colour=z,
                      matched=z.astype(np.uint64), n=np.zeros(0, np.int64), ids=[], metas=[],
                      levels=np.zeros(0, np.int64), counts=[], scanned=np.zeros(0, np.int64), view=view)

    @property
    def offsets(self) -> np.ndarray:
        """Where each query's hits start in `ids` and `metas`."""
        return np.concatenate([[0], np.cumsum(self.n)]).astype(np.int64)

    def results(self, qs: list[PreparedQuery]) -> list[ShardResult]:
        """The same answer as one ShardResult per query (Hit objects)."""
        cols = [c.tolist() for c in (self.keys, self.scores, self.hamming, self.colour, self.matched)]
        out, p = [], 0
        for i, q in enumerate(qs):
            n, lv = int(self.n[i]), int(self.levels[i])
            hits = make_hits(q.tokens, self.ids[p: p + n], *(c[i][:n] for c in cols), self.metas[p: p + n])
            p += n
            out.append(ShardResult(hits=tuple(hits), level=lv, relaxed=q.relaxed(lv), counts=tuple(self.counts[i]),
                                   scanned=int(self.scanned[i]), view=self.view))
        return out


def token_mask(tokens: tuple[str, ...], wanted) -> int:
    return sum(1 << j for j, t in enumerate(tokens) if t in wanted)


def make_hits(tokens: tuple[str, ...], ids, keys, scores, hamming, colour, masks, metas) -> list[Hit]:
    """Hits from columns (lists) of equal length."""
    names: dict[int, tuple[str, ...]] = {}  # the hits of a query mostly share one mask
    for m in set(masks):
        names[m] = tuple(t for j, t in enumerate(tokens) if m >> j & 1)
    ids = [key if sid is None else sid for sid, key in zip(ids, keys)]
    return list(map(Hit._make, zip(ids, keys, scores, hamming, colour, map(names.__getitem__, masks), metas)))
