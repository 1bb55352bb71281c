"""Pure functions of the query path: merging shard answers and choosing a global relaxation."""
from __future__ import annotations

import numpy as np

from shards.answer import Answer, make_hits
from shards.query import Hit, PreparedQuery, widened_level


def merge_answers(parts: list[tuple[Answer, np.ndarray, np.ndarray]], qs: list[PreparedQuery]) -> list[list[Hit]]:
    """Each query's k best hits (score, then id key) over the shards' columnar answers.

    A part is (answer, rows, queries): the answer's row rows[j] is for query
    queries[j] (a relaxation round answers only some queries). The winners are
    chosen with one sort of all the queries' candidates; only they become Hit objects.

    No de-duplication: an item is answered for only by the shard that owns its
    bucket (shards hide the copies they hold during a rebalance), so an id seen
    twice would be a bug, and tests look for it rather than have it papered over.
    """
    nq = len(qs)
    widths = [a.scores.shape[1] for a, _, _ in parts]
    starts = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
    grid = {"scores": np.full((nq, starts[-1]), np.inf), "keys": np.zeros((nq, starts[-1]), np.uint64),
            "hamming": np.zeros((nq, starts[-1]), np.int64), "colour": np.zeros((nq, starts[-1])),
            "matched": np.zeros((nq, starts[-1]), np.uint64), "pos": np.zeros((nq, starts[-1]), np.int64)}
    for (a, rows, queries), c0, w in zip(parts, starts, widths):
        for name in ("scores", "keys", "hamming", "colour", "matched"):
            grid[name][queries, c0: c0 + w] = getattr(a, name)[rows]
        grid["pos"][queries, c0: c0 + w] = a.offsets[rows][:, None] + np.arange(w)  # index into ids, metas
    kmax = max((q.k for q in qs), default=1)
    # padding (+inf) sorts last; a hit's score is always finite (finite weights and distances)
    order = np.lexsort((grid["keys"], grid["scores"]), axis=-1)[:, :kmax]
    at = (np.arange(nq)[:, None], order)
    won = {name: g[at] for name, g in grid.items()}
    part_of = (np.searchsorted(starts, order, side="right") - 1).tolist()
    n_won = np.minimum([q.k for q in qs], np.isfinite(won["scores"]).sum(1)).tolist()
    cols = [won[name].tolist() for name in ("keys", "scores", "hamming", "colour", "matched")]
    pos = won["pos"].tolist()
    out = []
    for i, (q, m) in enumerate(zip(qs, n_won)):
        src = [parts[p][0] for p in part_of[i][:m]]
        where = pos[i][:m]
        out.append(make_hits(q.tokens, [a.ids[j] for a, j in zip(src, where)], *(c[i][:m] for c in cols),
                             [a.metas[j] for a, j in zip(src, where)]))
    return out


def merge_by_full_sort(lists: list[list[Hit]], k: int) -> list[Hit]:
    """The slow twin of merge_answers, over each shard's Hit lists."""
    return sorted((h for hits in lists for h in hits), key=Hit.sort_key)[:k]


def global_level(shard_counts: list[tuple[int, ...]], k: int, n_required: int) -> int:
    """The least relaxation at which the shards together have >= k candidates.

    Each shard counts level by level and stops at its first level with >= k of
    its own (later levels only have more), so a shard whose counts end before
    level j already guarantees k candidates at j.
    """
    for level in range(n_required + 1):
        total = 0
        for counts in shard_counts:
            if level >= len(counts):
                return level
            total += counts[level]
        if total >= k:
            return level
    return n_required


def widened_global_level(shard_counts: list[tuple[int, ...]], level: int, widen: int, budget: float) -> int:
    """`level` widened by a scan budget in items (shards.query.widened_level), over the shards' totals.

    A query with a budget has every shard count at least to `widen`, so the totals
    at the levels the budget may choose are exact.
    """
    if budget <= 0:
        return level
    exact = min((len(c) for c in shard_counts), default=0)
    return widened_level(level, [sum(c[j] for c in shard_counts) for j in range(exact)], widen, budget)
