"""Paging through the whole catalog: a cursor and the merge of the shards' pages.

The catalog is listed in (bucket, id key) order. That order does not depend on
which shard holds a bucket, so a cursor (the last position returned) stays valid
across a rebalance: each item is listed exactly once, however the map changes
between pages. Within a page, each bucket is read from its owner (coordinator.py).
"""
from __future__ import annotations

import heapq

from shards.errors import InvalidInput


def encode_cursor(bucket: int, key: int) -> str:
    return f"{bucket}.{key:x}"


def parse_cursor(text: str | None, n_buckets: int) -> tuple[int, int] | None:
    """(bucket, key) of a cursor as `encode_cursor` wrote it; None or "" is the start."""
    if not text:
        return None
    bucket, dot, key = text.partition(".")
    try:
        b, k = int(bucket, 10), int(key, 16)
    except ValueError:
        b = k = -1
    if not dot or not 0 <= b < n_buckets or not 0 <= k < 2**64 or not key.isalnum():
        raise InvalidInput(f"not a cursor of this catalog: {text!r} (pass back `next_cursor` as it came)")
    return b, k


def merge_pages(pages, limit: int) -> tuple[list[dict], str | None]:
    """The first `limit` items of the shards' pages (each sorted by bucket, then key), and the
    cursor after them (None when the shards have no more)."""
    pages = list(pages)
    merged = list(heapq.merge(*pages, key=lambda it: (it["bucket"], it["key"])))
    items = merged[:limit]
    # a shard that filled its page may hold more; one that did not has given all it has
    more = len(merged) > limit or any(len(p) >= limit for p in pages)
    return items, (encode_cursor(items[-1]["bucket"], items[-1]["key"]) if more and items else None)
