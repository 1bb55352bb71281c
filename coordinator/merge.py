"""Pure functions of the query path: merging shard answers and choosing a global relaxation."""
from __future__ import annotations

import heapq
import itertools

from shards.query import Hit


def merge_topk(lists: list[list[Hit]], k: int) -> list[Hit]:
    """The k best hits of several (score, key)-sorted lists.

    No de-duplication: an item is answered for only by the shard that owns its
    bucket (shards hide the copies they hold during a rebalance), so an id seen
    twice would be a bug, and tests look for it rather than have it papered over.
    """
    return list(itertools.islice(heapq.merge(*lists, key=Hit.sort_key), k))


def merge_by_full_sort(lists: list[list[Hit]], k: int) -> list[Hit]:
    """The slow twin of merge_topk."""
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
