"""Photos added through POST /items: kept in the storage root's uploads/ folder.

An item records its photo relative to the storage root (`uploads/NAME`), so a copy of the
root (a backup restored elsewhere, the root mounted at another path) finds its photos.
Records made before that hold the path the daemon had for the photo, absolute or relative
to its working directory; a photo named as uploads are is looked for in this root's
uploads/, so those are found in a copy too. A catalog's own photo (`fashion-search
index`) is recorded and read at its own path.
"""
from __future__ import annotations

import re
import uuid
from pathlib import Path

from shards.wal import fsync_dir

UPLOADS = "uploads"
_NAME = re.compile(r"[0-9a-f]{32}\.img")


def uploads_folder(root: Path) -> Path:
    """The root's uploads/, made if new, and its entry in the root made durable: a photo fsync'd
    inside a folder whose own entry a crash loses is lost with it."""
    folder = Path(root) / UPLOADS
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        fsync_dir(folder.parent)
    return folder


def new_upload() -> str:
    """The record of a new uploaded photo: its path relative to the storage root."""
    return f"{UPLOADS}/{uuid.uuid4().hex}.img"


def upload_name(recorded: str) -> str | None:
    """The file name in uploads/ of a recorded photo path, or None for a catalog's own photo."""
    path = Path(recorded)
    return path.name if path.parent.name == UPLOADS and _NAME.fullmatch(path.name) else None


def photo_path(recorded: str, root: Path) -> Path:
    """Where the photo an item records lies, for the cluster whose storage root is `root`."""
    name = upload_name(recorded)
    return root / UPLOADS / name if name else Path(recorded)


def photo_mtime(path: Path) -> float:
    """When the photo at `path` was last written; infinity when it is gone or unreadable, so that
    it counts as newer than any time (indexed again, and its error reported; not pruned)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")
