"""Which code model made a storage root's binary codes, so that another one cannot mix in.

Codes compare only when the same network and projection made them (models/features.py).
A catalog coded with one features.pt and searched with queries coded by another answers
nonsense, and nothing else would say so. The first command that codes photos for a root
records the digest of its features.pt in `<root>/models.json`; every later one (index,
serve, demo, batch) compares its own and refuses a different one, before it writes or
answers anything.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from shards.errors import InvalidInput
from shards.files import write_atomically

RECORD = "models.json"


def features_digest(assets: str | os.PathLike) -> str:
    """The first 16 hex digits of the SHA-256 of `assets`/features.pt."""
    path = Path(assets) / "features.pt"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read the feature model {path}: {exc.strerror or exc}") from exc
    return hashlib.sha256(data).hexdigest()[:16]


def recorded_model(root: str | os.PathLike) -> str | None:
    """The digest `models.json` names, or None (no record yet, or unreadable)."""
    try:
        d = json.loads((Path(root) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return d.get("features") if isinstance(d, dict) else None


def check_models(root: str | os.PathLike, assets: str | os.PathLike | None = None) -> str:
    """Refuse models whose codes differ from those the root holds; record ours on first use.

    A root that does not exist yet is left alone (the command creates it; call again then).
    Returns this side's digest.
    """
    if assets is None:
        from models.data import ASSETS
        assets = ASSETS
    mine = features_digest(assets)
    root = Path(root)
    record = root / RECORD
    try:
        theirs = json.loads(record.read_text())
    except FileNotFoundError:
        if root.is_dir():
            write_atomically(record, json.dumps({"features": mine,
                                                 "file": str(Path(assets).resolve() / "features.pt")}))
        return mine
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{record} is unreadable ({exc}); it names the model the catalog's codes came "
                           "from: restore it, or remove it to trust the models given now") from None
    if not isinstance(theirs, dict):
        theirs = {"features": theirs}
    if theirs.get("features") != mine:
        raise InvalidInput(
            f"the catalog at {root} was coded with the feature model {theirs.get('features')} "
            f"({theirs.get('file', '?')}); "
            f"the models given now ({Path(assets).resolve()}) have {mine}. Codes of two models do not compare: "
            "use the models the catalog was indexed with (FASHION_ASSETS), or index the catalog again into a "
            "new storage root (the demo's: remove it, and `fashion-search demo` builds it again)")
    return mine
