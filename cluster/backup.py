"""A backup of a storage root, taken while the cluster serves.

The coordinator pauses writes (`Coordinator.writes_paused`; queries go on), so the files
of every shard, the placement map and the settings stand still while they are copied.
The copy holds every write acknowledged before the backup began, and no write half-done:
it is a storage root like any other, and restoring is serving from it.

The files go to `DEST.partial`, each fsync'd, which is renamed `DEST` only once whole: a
folder named `DEST` is always a complete backup, and one cut short (a crash, Ctrl-C)
stays `DEST.partial`, which the next backup to `DEST` replaces. `owner.json` (which Ray
serves the root) is not copied: a restored root belongs to no cluster yet.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path

from shards.errors import InvalidInput, StorageError, storage_error
from shards.files import write_atomically
from shards.wal import fsync_dir

from .ownership import OWNER
from .uploads import UPLOADS

ABOUT = "backup.json"   # when, from where, what: written into the backup


def check_destination(root: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """`dest`, absolute; refused when it exists (a backup writes over nothing) or overlaps the root."""
    root, dest = Path(root).resolve(), Path(dest).resolve()
    if dest.exists():
        raise InvalidInput(f"{dest} exists: a backup goes into a new folder, it writes over nothing")
    if dest == root or root in dest.parents or dest in root.parents:
        raise InvalidInput(f"the backup {dest} and the storage root {root} overlap: choose a folder outside it")
    return dest


def _skipped(rel: Path, name: str) -> bool:
    return name.endswith(".tmp") or (rel == Path(".") and name in (OWNER, ABOUT))


def copy_root(root: str | os.PathLike, dest: str | os.PathLike, about: dict | None = None) -> dict:
    """Copy the storage root's files to `dest` (see the module's notes); the caller keeps them still."""
    root = Path(root).resolve()
    dest = check_destination(root, dest)
    partial = dest.with_name(dest.name + ".partial")
    t0 = time.monotonic()
    files = size = 0
    try:
        shutil.rmtree(partial, ignore_errors=True)    # a backup cut short before
        for folder, subfolders, names in os.walk(root):
            subfolders.sort()
            rel = Path(folder).relative_to(root)
            out = partial / rel
            out.mkdir(parents=True, exist_ok=True)
            for name in sorted(names):
                if _skipped(rel, name):
                    continue
                try:
                    with open(Path(folder) / name, "rb") as src, open(out / name, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                        dst.flush()
                        os.fsync(dst.fileno())
                        size += dst.tell()
                except FileNotFoundError:
                    if rel.parts[:1] == (UPLOADS,):
                        continue   # a deleted item's photo, removed after its delete was acknowledged
                    raise StorageError(f"{rel / name} went away during the copy (a shard restarted and folded "
                                       f"its log?); nothing is at {dest}: run the backup again") from None
                files += 1
            fsync_dir(out)
        report = {"backup": str(dest), "source": str(root), "files": files, "bytes": size,
                  "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(about or {})}
        write_atomically(partial / ABOUT, json.dumps(report, indent=1))
        os.rename(partial, dest)
        fsync_dir(dest.parent)
    except StorageError:
        raise
    except OSError as exc:
        raise storage_error(f"the backup to {dest} failed ({exc.strerror or exc}); nothing is at {dest}, and what "
                            f"was copied is in {partial}", exc) from exc
    report["copy_s"] = round(time.monotonic() - t0, 3)
    return report


async def backup_root(coordinator, root: str | os.PathLike, dest: str | os.PathLike) -> dict:
    """The backup: `coordinator` (coordinator.Coordinator) pauses writes while the root is copied."""
    check_destination(root, dest)
    t0 = time.monotonic()
    async with coordinator.writes_paused():
        t1 = time.monotonic()
        st = await coordinator.stats()
        about = {"placement_version": st["version"], "items": st["items"], "shards": len(st["buckets_per_shard"]),
                 "unavailable": st["unavailable"]}   # their items are copied, not counted
        report = await asyncio.to_thread(copy_root, root, dest, about)
    return {**report, "waited_s": round(t1 - t0, 3), "writes_paused_s": round(time.monotonic() - t1, 3)}
