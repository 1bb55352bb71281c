"""`fashion-search export --out FILE`: the whole catalog, one JSON line per item.

For a shop to check the index against its own records, or to take its catalog
elsewhere. A line is {"id": ..., "attributes": [...], "meta": {...}}, meta as stored
(the title, and where the photo lies on the cluster's storage). Pages come from the
coordinator (Coordinator.list_items) in the catalog's order: each item indexed before
the export began and not deleted during it is written exactly once, rebalances
included. FILE appears only once whole (cluster/new_file.py).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from .new_file import whole_file

PAGE = 10_000   # items per page (the most a page may hold)


def export_items(list_page: Callable[[str | None, int], dict], out_path, log=print) -> dict:
    """Write every item to `out_path`; `list_page(cursor, limit)` is Coordinator.list_items."""
    t0 = time.perf_counter()
    items, cursor = 0, None
    with whole_file(out_path) as f:
        while True:
            page = list_page(cursor, PAGE)
            for it in page["items"]:
                f.write(json.dumps(it) + "\n")
            items += len(page["items"])
            log(f"  {items} items ({time.perf_counter() - t0:.0f} s)")
            if (cursor := page["next_cursor"]) is None:
                break
    seconds = time.perf_counter() - t0
    return {"out": str(Path(out_path).resolve()), "items": items, "seconds": round(seconds, 2)}
