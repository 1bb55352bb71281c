"""Paging through the whole catalog: a cursor and the merge of the shards' pages.

The catalog is listed in (bucket, id key) order. That order does not depend on
which shard holds a bucket, so a cursor (the last position returned) stays valid
across a rebalance: each item is listed exactly once, however the map changes
between pages. Within a page, each bucket is read from its owner (coordinator.py), in
two rounds: the shards' positions settle where the page ends (page_end), then only
the items up to there are sent (merge_pages), not `limit` from every shard.
"""
from __future__ import annotations

import heapq
from typing import Callable, Iterator

import numpy as np

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


def page_end(positions: dict, limit: int) -> tuple[tuple[int, int] | None, bool, list]:
    """Where a page ends, from each shard's first `limit` positions (bucket and key arrays, sorted):
    (the position of its last item, None when there is none; whether items may follow it; the
    shards that hold items of the page)."""
    names = list(positions)
    bks = np.concatenate([np.asarray(positions[n][0], np.int64) for n in names] or [np.zeros(0, np.int64)])
    keys = np.concatenate([np.asarray(positions[n][1], np.uint64) for n in names] or [np.zeros(0, np.uint64)])
    if not len(bks):
        return None, False, []
    source = np.repeat(np.arange(len(names)), [len(positions[n][0]) for n in names])
    order = np.lexsort((keys, bks))[:limit]
    # a shard that filled its answer may hold more; one that did not has given all it has
    more = len(bks) > limit or any(len(positions[n][0]) >= limit for n in names)
    return (int(bks[order[-1]]), int(keys[order[-1]])), more, [names[i] for i in np.unique(source[order])]


def merge_pages(pages, limit: int, until: tuple[int, int] | None, more: bool) -> tuple[list[dict], str | None]:
    """The first `limit` of the shards' items (each shard's sorted by bucket, then key) and the cursor
    of the next page (None after the last). `until` and `more` are what page_end said.

    Writes that landed between the two rounds can give more items than page_end counted, and a
    shard then stops at `limit` short of `until`: the page ends at its own last item, before any
    item a shard held back."""
    pages = list(pages)
    merged = list(heapq.merge(*pages, key=lambda it: (it["bucket"], it["key"])))
    items = merged[:limit]
    if len(merged) > limit or any(len(p) >= limit for p in pages):
        return items, encode_cursor(items[-1]["bucket"], items[-1]["key"])
    return items, (encode_cursor(*until) if more else None)


def every_page(list_page: Callable[[str | None, int], dict], limit: int = 10_000,
               cursor: str | None = None) -> Iterator[dict]:
    """The catalog's pages from `cursor` (None: the first) to the last; `list_page(cursor, limit)` is
    Coordinator.list_items (called synchronously). An error of a page (a shard that does not answer)
    is raised where it comes."""
    while True:
        page = list_page(cursor, limit)
        yield page
        if (cursor := page["next_cursor"]) is None:
            return


def every_item(list_page: Callable[[str | None, int], dict], limit: int = 10_000) -> Iterator[dict]:
    """Every item of the catalog, page after page (every_page)."""
    for page in every_page(list_page, limit):
        yield from page["items"]
