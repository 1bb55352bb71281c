"""`fashion-search export --out FILE`: the whole catalog, one JSON line per item.

For a shop to check the index against its own records, or to take its catalog
elsewhere. A line is {"id": ..., "attributes": [...], "meta": {...}}, meta as stored
(the title, and where the photo lies on the cluster's storage). Pages come from the
coordinator (Coordinator.list_items) in the catalog's order: each item indexed before
the export began and not deleted during it is written exactly once, rebalances
included. FILE appears only once whole (cluster/new_file.py). After each page the lines
are fsync'd and FILE.progress records the next page's cursor, a position in the catalog's
order that no rebalance moves, so a stopped export goes on from there with `--resume`
(items added meanwhile before that position are not in the file).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from coordinator.listing import every_page

from .new_file import check_new_file, durable, progress_file, record_progress, resume_point, whole_file

PAGE = 10_000        # items a page, each page made durable before the next
LOG_EVERY = 10_000   # items between progress lines


def export_items(list_page: Callable[[str | None, int], dict], out_path, log=print, resume: bool = False,
                 page: int = PAGE) -> dict:
    """Write every item to `out_path`; `list_page(cursor, limit)` is Coordinator.list_items, called
    synchronously. `resume`: go on from the page a stopped run made durable (FILE.progress), if any."""
    out = check_new_file(out_path)
    done = resume_point(out, {"job": "export"}) if resume else None
    if done is None:
        progress_file(out).unlink(missing_ok=True)    # it would describe a file this run starts anew
    t0 = time.perf_counter()
    n = first = done["items"] if done else 0
    logged = n // LOG_EVERY
    with whole_file(out, keep=done["bytes"] if done else None) as f:
        for p in every_page(list_page, page, done["cursor"] if done else None):
            for it in p["items"]:
                f.write(json.dumps(it) + "\n")
            n += len(p["items"])
            if p["next_cursor"] is not None:
                record_progress(out, {"job": "export", "cursor": p["next_cursor"], "bytes": durable(f), "items": n})
            if n // LOG_EVERY > logged:
                logged = n // LOG_EVERY
                log(f"  {n} items ({time.perf_counter() - t0:.0f} s)")
    progress_file(out).unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    return {"out": str(Path(out).resolve()), "items": n, "resumed_at_item": first if done else None,
            "seconds": round(seconds, 2)}
