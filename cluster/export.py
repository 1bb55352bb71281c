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
from typing import Iterable

from .new_file import whole_file

LOG_EVERY = 10_000   # items between progress lines


def export_items(items: Iterable[dict], out_path, log=print) -> dict:
    """Write every item to `out_path` (`items`: Cluster.items())."""
    t0 = time.perf_counter()
    n = 0
    with whole_file(out_path) as f:
        for n, it in enumerate(items, 1):
            f.write(json.dumps(it) + "\n")
            if n % LOG_EVERY == 0:
                log(f"  {n} items ({time.perf_counter() - t0:.0f} s)")
    seconds = time.perf_counter() - t0
    return {"out": str(Path(out_path).resolve()), "items": n, "seconds": round(seconds, 2)}
