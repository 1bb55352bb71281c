"""Recognition on real street photos, with the ccp-tags photos' image-level tags as labels.

The instance evaluation measures the query path on catalog photos pasted on street
scenes; what people photograph are garments being worn. Each photo here goes through
the query path as option 1 (no category, no box: the detector's box, the attributes
read in it), and the category read counts as right when one of the detector classes
it may appear as (the guidance map, `detector_classes.json`) is among the photo's tags.

- `category_in_tags`: over the photos where a category was read at all;
- `required_category_in_tags`: over those where it was sure enough to filter the
  search (p >= REQUIRED_P), which is what excludes catalog items when it is wrong.
"""
from __future__ import annotations

import json
from pathlib import Path

from shards.errors import InvalidInput

from .data import data_root, decode_image, photo_in, read_csv
from .detector import MAPPING_FILE, guidance


def street_recognition(folder: Path | None = None, limit: int | None = None, assets: Path | None = None) -> dict:
    """`fashion-search eval street`: a folder with tags.csv (file_name, tags joined by '|') and the photos."""
    from . import pipeline as pl
    folder = Path(folder) if folder else data_root() / "ccp-tags"
    rows = read_csv(folder / "tags.csv", ("file_name", "tags"), "tags file")
    if limit:
        rows = rows[:limit]
    pipe = pl.Pipeline.load(assets)
    # the detector's own guidance map; without a detector, the shipped one
    mapping = pipe.detector.mapping if pipe.detector is not None else json.loads(MAPPING_FILE.read_text())
    read = right = sure = sure_right = unreadable = untagged = 0
    for r in rows:
        tags = set(filter(None, (r["tags"] or "").split("|")))
        if not tags:                 # nothing to check a reading against
            untagged += 1
            continue
        try:
            image = decode_image(photo_in(folder, r["file_name"]))
        except InvalidInput:
            unreadable += 1
            continue
        a = pipe.query(image)
        allowed = guidance(mapping, a.category)
        if allowed is None:          # no category, or "other": nothing claimed
            continue
        hit = bool(allowed & tags)
        read += 1
        right += hit
        if f"articleType={a.category}" in a.query_terms()["required"]:
            sure += 1
            sure_right += hit
    n = len(rows) - unreadable - untagged
    return {"photos": len(rows), "unreadable": unreadable, "untagged": untagged, "data": str(folder),
            "category_read": read / max(n, 1),
            "category_in_tags": right / max(read, 1), "category_required": sure / max(n, 1),
            "required_category_in_tags": sure_right / max(sure, 1), "required_p": pl.REQUIRED_P}
