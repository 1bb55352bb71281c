"""`fashion-search prune-uploads`: remove uploaded photos that no item records.

A write refused after its photo was stored keeps the photo (the item may have landed on
one shard: cluster/rest.py), so `uploads/` can gather photos of no item. This finds them:
the photos old enough to be past any write in flight are taken first, then the whole
catalog is paged through (each item that existed before the listing is seen exactly
once, rebalances included: coordinator/listing.py), and only the photos no item records
are removed. A shard that does not answer stops it before anything is removed.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

from .uploads import UPLOADS, photo_mtime, upload_name

MIN_AGE_S = 3600.0   # a photo this old is past any write that stored it (a write gives up after minutes)


def prune_uploads(items: Iterable[dict], root, min_age_s: float = MIN_AGE_S, dry_run: bool = False,
                  now: Callable[[], float] = time.time) -> dict:
    """Remove the photos in `root`/uploads that are older than `min_age_s` and that no item records;
    `items` is the whole catalog (Cluster.items()), read before anything is removed."""
    folder = Path(root) / UPLOADS
    files = {p.name: p for p in (folder.iterdir() if folder.is_dir() else ()) if upload_name(f"{UPLOADS}/{p.name}")}
    cutoff = now() - min_age_s
    old = {name for name, p in files.items() if photo_mtime(p) < cutoff}   # taken before the catalog is read
    recorded, n_items = set(), 0
    for n_items, it in enumerate(items, 1):
        if name := upload_name(it["meta"].get("image", "")):
            recorded.add(name)
    orphans = sorted(old - recorded)
    freed = 0
    if not dry_run:
        for name in orphans:
            try:
                size = files[name].stat().st_size
                files[name].unlink()
                freed += size
            except FileNotFoundError:
                pass
    return {"items": n_items, "photos": len(files), "too_young": len(files) - len(old), "orphans": len(orphans),
            "removed": 0 if dry_run else len(orphans), "bytes_freed": freed, "dry_run": dry_run,
            "items_whose_photo_is_missing": len(recorded - set(files)), "orphan_names": orphans[:20]}
