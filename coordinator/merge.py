"""Pure functions of the query path: merging shard answers and choosing a global relaxation."""
from __future__ import annotations

import heapq

from shards.query import Hit


def merge_topk(lists: list[list[Hit]], k: int) -> list[Hit]:
    """The k best hits of several (score, key)-sorted lists, each id once.

    During a rebalance an item can be held by two shards, but only its owner
    answers for it, so duplicates are not expected; an id seen twice keeps its
    first (best) occurrence all the same.
    """
    out, seen = [], set()
    for hit in heapq.merge(*lists, key=Hit.sort_key):
        if hit.id in seen:
            continue
        seen.add(hit.id)
        out.append(hit)
        if len(out) == k:
            break
    return out


def merge_by_full_sort(lists: list[list[Hit]], k: int) -> list[Hit]:
    """The slow twin of merge_topk."""
    best = {}
    for hit in sorted((h for hits in lists for h in hits), key=Hit.sort_key):
        best.setdefault(hit.id, hit)
    return list(best.values())[:k]


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
