"""Which models made a storage root's index, so that others cannot mix in.

Two things a catalog's index holds only compare with what the same models make:
- its binary codes: only a query coded by the same network and projection
  (models/features.py, `features.pt`) measures a meaningful Hamming distance to them;
- its postings' keys: the attribute tokens (`field=value`) of the attribute model's
  vocabulary (`attributes.pt`'s taxonomy). A model trained on another taxonomy reads
  tokens the postings may not have: filters then keep nothing, or the wrong items. Any
  model with the same vocabulary is fine (a retrained one reads the same tokens).
A catalog searched with other models answers nonsense, and nothing else would say so.
The first command that codes photos for a root records both digests in
`<root>/models.json`; every later one (index, serve, demo, batch) compares its own and
refuses different ones, before it writes or answers anything.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from shards.errors import InvalidInput
from shards.files import write_atomically

RECORD = "models.json"
REINDEX = ("use the models the catalog was indexed with (FASHION_ASSETS), or index the catalog again into a new "
           "storage root (the demo's: remove it, and `fashion-search demo` builds it again)")


def features_digest(assets: str | os.PathLike) -> str:
    """The first 16 hex digits of the SHA-256 of `assets`/features.pt."""
    path = Path(assets) / "features.pt"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read the feature model {path}: {exc.strerror or exc}") from exc
    return hashlib.sha256(data).hexdigest()[:16]


def vocabulary_digest(assets: str | os.PathLike) -> str:
    """The first 16 hex digits of the SHA-256 of the attribute model's tokens, sorted, one per line."""
    from models.weights import read_weights
    taxonomy = read_weights(Path(assets) / "attributes.pt", "attribute model", ("taxonomy",))["taxonomy"]
    tokens = sorted(f"{f}={v}" for f in taxonomy["fields"] for v in taxonomy["values"][f])
    return hashlib.sha256("\n".join(tokens).encode()).hexdigest()[:16]


def recorded_model(root: str | os.PathLike) -> str | None:
    """The feature model's digest `models.json` names, or None (no record yet, or unreadable)."""
    try:
        d = json.loads((Path(root) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return d.get("features") if isinstance(d, dict) else None


def check_models(root: str | os.PathLike, assets: str | os.PathLike | None = None) -> str:
    """Refuse models whose codes or vocabulary differ from those the root holds; record ours on first use.

    A root that does not exist yet is left alone (the command creates it; call again then).
    A record from before vocabularies were recorded gains ours. Returns this side's feature digest.
    """
    if assets is None:
        from models.data import ASSETS
        assets = ASSETS
    assets = Path(assets).resolve()
    mine = {"features": features_digest(assets), "file": str(assets / "features.pt"),
            "vocabulary": vocabulary_digest(assets), "attributes_file": str(assets / "attributes.pt")}
    root = Path(root)
    record = root / RECORD
    try:
        theirs = json.loads(record.read_text())
    except FileNotFoundError:
        if root.is_dir():
            write_atomically(record, json.dumps(mine))
        return mine["features"]
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{record} is unreadable ({exc}); it names the models the catalog's index came "
                           "from: restore it, or remove it to trust the models given now") from None
    if not isinstance(theirs, dict):
        theirs = {"features": theirs}
    if theirs.get("features") != mine["features"]:
        raise InvalidInput(
            f"the catalog at {root} was coded with the feature model {theirs.get('features')} "
            f"({theirs.get('file', '?')}); the models given now ({assets}) have {mine['features']}. "
            f"Codes of two models do not compare: {REINDEX}")
    if "vocabulary" not in theirs:
        write_atomically(record, json.dumps({**theirs, "vocabulary": mine["vocabulary"],
                                             "attributes_file": mine["attributes_file"]}))
    elif theirs["vocabulary"] != mine["vocabulary"]:
        raise InvalidInput(
            f"the catalog at {root} was indexed under the attribute vocabulary {theirs['vocabulary']} "
            f"({theirs.get('attributes_file', '?')}); the attribute model given now ({assets}) reads the "
            f"vocabulary {mine['vocabulary']}: its tokens would not meet the catalog's postings. {REINDEX}")
    return mine["features"]
