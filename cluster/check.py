"""`fashion-search check`: is a storage root, or a backup of one, whole and consistent?

It opens every shard the placement map names read-only (shards/shard.py), so it changes
no file and needs no Ray, and answers what an operator asks before serving a restored
backup, or after a disk or a node went bad:
- can every shard be opened, and did its recovery find damage (an older snapshot read,
  log records skipped)? Either is a problem: an acknowledged item may be gone;
- does each item lie where the map says? An item in a bucket its shard neither owns nor
  is receiving or draining (`stray`) would be answered twice, or by the wrong shard;
- does a backup's own record (backup.json) count as many items as its shards hold? (Only
  while no shard file is newer than it: a backup served from, to restore, takes writes.)
- does every uploaded photo an item records lie in uploads/? A warning: the item is
  found, its photo is not shown. So is a feature model here (FASHION_ASSETS) other than
  the one that coded the catalog (models.json): serving would refuse it.
A rebalance left half-done is reported, not a problem: the next start finishes it.
Best run on a backup or a stopped cluster. On a live root a shard may fold its log while it
is read, and a file vanishes under the check; a shard whose files changed while it was read
is read again (READ_TRIES in all). A rebalance may move buckets between two shards' reads:
each shard is judged against the maps before and after its read, and the whole check is
taken again while the map's version changes under it (READ_TRIES in all).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from coordinator.placement import Placement
from shards.errors import FashionSearchError, InvalidInput
from shards.shard import Shard

from .backup import ABOUT
from .model_record import RECORD, features_digest, recorded_model
from .uploads import UPLOADS, upload_name

BUCKETS_PER_READ = 256   # the photo check reads a shard's items this many buckets at a time
READ_TRIES = 3           # reads of a shard whose files change under the check (a live shard), and of
                         # the whole root while its placement map changes (a rebalance going on)


def files_state(folder: Path) -> list:
    """Each file's name, size and modification time: what a write or a log fold changes."""
    try:
        return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    except FileNotFoundError:       # a file gone between the listing and its stat: changing now,
        return [object()]           # so unlike any other state, this one included


def open_steady(folder: Path) -> Shard:
    """The shard opened read-only; read again when it failed or found damage while its files changed."""
    for attempt in range(1, READ_TRIES + 1):
        before = files_state(folder)
        try:
            shard = Shard(folder, create=False, read_only=True)
        except (FashionSearchError, OSError):
            if attempt < READ_TRIES and files_state(folder) != before:
                continue
            raise
        if shard.damaged and attempt < READ_TRIES and files_state(folder) != before:
            shard.close()
            continue
        return shard


def check_root(root: str | os.PathLike) -> dict:
    """The report; `ok` is False when any `problems` were found.

    A rebalance that runs while the shards are read moves buckets between the reads: the whole
    check is taken again (READ_TRIES in all) until the map stays one version from the first read
    to the last, so that the counts add up at one version."""
    root = Path(root).resolve()
    for _ in range(READ_TRIES):
        report, versions = _check_once(root)
        if versions[0] == versions[-1]:
            return report
    report["warnings"].append(
        f"the placement map changed during each of {READ_TRIES} reads (versions {versions[0]} to "
        f"{versions[-1]} the last time): a rebalance is going on. Each shard's items were judged against the "
        "maps before and after its read, so a bucket moving is not counted as stray, but the counts were taken at "
        "different versions; check again once it is done")
    return report


def _load_map(root: Path) -> Placement:
    placement = Placement.load(root) if root.is_dir() else None   # CorruptData: the map itself is unreadable
    if placement is None:
        raise InvalidInput(f"no storage root at {root} (no placement map there)")
    return placement


def _may_hold(placement: Placement, name: str) -> np.ndarray:
    """Buckets where shard `name` may hold items: its own, one moving in, a stale copy draining out."""
    held = np.asarray(placement.owner) == name
    for b, s in list(placement.moving.items()) + list(placement.draining.items()):
        held[b] |= s == name
    return held


def _check_once(root: Path) -> tuple[dict, list[int]]:
    """One read of every shard; with the map's version before the first read and after each."""
    placement = first = _load_map(root)
    n = placement.n_buckets
    problems, warnings, shards = [], [], {}
    held = answered = 0
    photos = {"recorded": 0, "missing": 0, "missing_examples": []}
    names, versions = list(placement.shards), [placement.version]
    while names:
        name = names.pop(0)
        before = placement
        try:
            shard, error = open_steady(root / name), None
        except (FashionSearchError, OSError) as exc:
            shard, error = None, exc
        placement = _load_map(root)     # a rebalance may have moved buckets while the shard was read
        versions.append(placement.version)
        names += [s for s in placement.shards if s not in shards and s not in names and s != name]
        if shard is None:
            if name in placement.shards:        # not a shard that a rebalance removed meanwhile
                problems.append(f"{name} cannot be read: {error}")
                shards[name] = {"error": str(error)}
            continue
        counts = shard.bucket_counts(n)     # of the shard as opened: its files were read whole
        mine = np.asarray(placement.owner) == name
        allowed = _may_hold(before, name) | _may_hold(placement, name)
        stray = int(counts[~allowed].sum())
        report = {"items": int(counts[mine].sum()), "held": len(shard), "stray": stray,
                  "damaged": shard.damaged, "warnings": list(shard.warnings)}
        shards[name] = report
        held += report["held"]
        answered += report["items"]
        if shard.damaged:
            problems.append(f"{name}: its recovery found damage ({'; '.join(shard.warnings)}): acknowledged items "
                            f"may be missing")
        if stray:
            buckets = np.flatnonzero(counts * ~allowed)[:5].tolist()
            problems.append(f"{name} holds {stray} items in buckets the placement map gives to other shards "
                            f"(buckets {buckets}...): they would be answered twice or by the wrong shard")
        _check_photos(shard, np.flatnonzero(mine), n, root, photos)
        shard.close()
    if photos["missing"]:
        warnings.append(f"{photos['missing']} items record an uploaded photo that is not in {root / UPLOADS}: "
                        f"they are found, their photo is not shown")
    for extra in sorted(p.name for p in root.glob("shard-*") if p.is_dir() and p.name not in placement.shards):
        warnings.append(f"{extra}/ is not in the placement map (a shard removed by a rebalance?): nothing reads it")
    backup = _backup_record(root)
    if backup is not None and "error" in backup:
        problems.append(backup["error"])
    elif backup is not None and not _untouched_since_backup(root, placement.shards):
        backup["compared"] = False
        warnings.append(f"shard files are newer than {ABOUT}: the root has been served since the backup, "
                        "so its count is not compared")
    elif backup is not None and not backup.get("unavailable"):
        backup["compared"] = True
        if backup.get("items") != held:
            problems.append(f"{ABOUT} counts {backup.get('items')} items and the shards hold {held}")
    models = _models(root)
    if models["recorded"] is None:
        warnings.append(f"no readable {RECORD}: the first command that serves this root records the models given "
                        "then, whatever made its codes")
    elif models["recorded"] != models["here"]:
        warnings.append(f"the catalog was coded with the feature model {models['recorded']}; the models here "
                        f"(FASHION_ASSETS) have {models['here']}: serving it with them is refused")
    rebalance = {"moving": len(placement.moving), "draining": len(placement.draining)}
    if any(rebalance.values()) and first.version == placement.version:
        warnings.append(f"a rebalance was left half-done ({rebalance['moving']} buckets moving, "
                        f"{rebalance['draining']} draining): the next start of the cluster finishes it")
    return {"root": str(root), "ok": not problems, "items": answered, "held": held,
            "placement_version": placement.version, "n_shards": len(placement.shards), "rebalance": rebalance,
            "uploaded_photos": photos, "backup": backup, "models": models, "problems": problems, "warnings": warnings,
            "shards": shards}, versions


def _check_photos(shard: Shard, buckets: np.ndarray, n_buckets: int, root: Path, photos: dict) -> None:
    """Count the items of `buckets` that record an uploaded photo, and those whose photo is gone."""
    for i in range(0, len(buckets), BUCKETS_PER_READ):
        for meta in shard.export_buckets(buckets[i:i + BUCKETS_PER_READ].tolist(), n_buckets)["metas"]:
            image = meta.get("image")
            name = upload_name(image) if isinstance(image, str) else None
            if name is None:
                continue
            photos["recorded"] += 1
            if not (root / UPLOADS / name).is_file():
                photos["missing"] += 1
                if len(photos["missing_examples"]) < 5:
                    photos["missing_examples"].append(f"{UPLOADS}/{name}")


def _models(root: Path) -> dict:
    """The feature model the root's codes came from, and the one this machine's models have (None: unreadable)."""
    from models.data import ASSETS
    try:
        here = features_digest(ASSETS)
    except InvalidInput:
        here = None
    return {"recorded": recorded_model(root), "here": here}


def _untouched_since_backup(root: Path, shards: list[str]) -> bool:
    """No shard file written after backup.json (the backup writes it last): the copy as it was taken.
    Served from (the documented restore), it takes writes, and its count no longer holds."""
    taken = (root / ABOUT).stat().st_mtime
    return all(f.stat().st_mtime <= taken for s in shards if (root / s).is_dir() for f in (root / s).iterdir())


def _backup_record(root: Path) -> dict | None:
    try:
        about = json.loads((root / ABOUT).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"error": f"{ABOUT} is unreadable: {exc}"}
    return about if isinstance(about, dict) else {"error": f"{ABOUT} is not a JSON object"}
