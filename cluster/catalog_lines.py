"""A catalog as JSON lines, for `fashion-search index`: an export's file, or a shop's feed.

New feature weights code photos differently, and a storage root holds one model's codes
(cluster/model_record.py). Moving a catalog to new models is therefore: `export` it, then
`index` the export into a new root with the new models (deploy/README.md). A line is

    {"id": 42, "attributes": ["articleType=Tshirts", ...], "meta": {"title": "...", "image": "..."}}

as `export` writes it, or the flat {"id", "title", "image", "attributes"} a feed may hold (the
title may be named as a CSV's column is, `productDisplayName`). `attributes` (optional) are
the tokens the item is indexed under, read as POST /items reads them (`gender=men` is the
vocabulary's `gender=Men`): corrections made with PATCH move along. Without them the models
read the photo. An exported item whose photo was fetched by URL keeps the URL
(`meta.source`), so a later `index --sync` with the shop's feed finds it as it is.

A relative photo path starts at `base` (`--images`; default the file's folder). For an export
that is the storage root it came from, where uploaded photos lie (`uploads/NAME`). A path
recorded relative to the working directory of an older `index` run is looked for there too.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from models.data import TITLE_COLUMNS, Product
from shards.codes import check_token, id_from_text
from shards.errors import InvalidInput

from .photo_fetch import is_url
from .rest import MAX_ITEM_TOKENS       # tokens one item may carry, as PATCH /items/{id} allows


def is_catalog_lines(path: str | os.PathLike) -> bool:
    """Is `path` a JSON-lines catalog (by its name) rather than a CSV?"""
    return Path(path).suffix.lower() in (".jsonl", ".ndjson")


def read_catalog_lines(path: str | os.PathLike, base: str | os.PathLike | None = None,
                       vocabulary=None) -> list[Product]:
    """Every line of `path` as a Product (its `attributes` set when the line gives them, spelt as
    `vocabulary`, a models.taxonomy.Taxonomy, spells them); a line that is not one item is an
    InvalidInput naming the line, before anything is written."""
    path = Path(path)
    base = Path(base) if base is not None else path.parent
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except FileNotFoundError as exc:
        raise InvalidInput(f"no catalog at {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read the catalog {path}: {exc}") from exc
    out = [_product(line, base, f"{path}, line {n}", vocabulary) for n, line in enumerate(lines, 1) if line.strip()]
    if not out:
        raise InvalidInput(f"{path}: the catalog has no lines")
    return out


def _product(line: str, base: Path, where: str, vocabulary) -> Product:
    try:
        item = json.loads(line)
    except ValueError as exc:
        raise InvalidInput(f"{where}: not JSON ({exc})") from None
    if not isinstance(item, dict):
        raise InvalidInput(f"{where}: a line is a JSON object, got {line[:80]!r}")
    meta = item.get("meta", {})
    if not isinstance(meta, dict):
        raise InvalidInput(f"{where}: meta is an object, got {meta!r}")
    raw_id = item.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (int, str)) or raw_id == "":
        raise InvalidInput(f"{where}: every line needs an id (a number or a string), got {raw_id!r}")
    try:
        item_id = str(id_from_text(str(raw_id)))
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    # the title under a CSV's names for it (TITLE_COLUMNS: productDisplayName first), or the meta's
    title = next((item[k] for k in TITLE_COLUMNS if k in item), meta.get("title", ""))
    image = item.get("image", meta.get("image"))
    title = "" if title is None else title        # a feed's null: no title
    if not isinstance(title, str):
        raise InvalidInput(f"{where}: title is a string, got {title!r}")
    if not isinstance(image, str) or not image:
        raise InvalidInput(f"{where}: every line names its photo (image, or meta.image), got {image!r}")
    attributes = item.get("attributes")
    if attributes is not None:
        if not isinstance(attributes, list) or not attributes or len(attributes) > MAX_ITEM_TOKENS:
            raise InvalidInput(f"{where}: attributes are a list of 1 to {MAX_ITEM_TOKENS} tokens, got {attributes!r}")
        try:
            attributes = tuple(dict.fromkeys(check_token(t) for t in attributes))   # a repeat counts once
            if vocabulary is not None:
                attributes = vocabulary.resolve_tokens(attributes)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None
    try:
        photo = named_photo(image, base)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    source = meta.get("source")      # an exported item's photo was fetched from there: a feed's sync knows it
    source = source if is_url(source) and not is_url(image) else None
    return Product(id=item_id, fields={}, title=title.strip(), image=photo, attributes=attributes, source=source)


def named_photo(image: str, base: Path) -> Path | str:
    """The photo a catalog's line or row names: an http(s) URL as it is (`index` fetches it), a
    path as `photo_at` finds it; a URL of another scheme is an InvalidInput."""
    if "://" in image and not is_url(image):
        raise InvalidInput(f"a photo's URL is http:// or https://, got {image!r}")
    return image if is_url(image) else photo_at(image, base)


def photo_at(recorded: str, base: Path) -> Path:
    """The photo a line names: an absolute path as it is; a relative one from `base`, or else, when
    only that exists, from the working directory (a record of an older `index` run)."""
    path = Path(recorded)
    if path.is_absolute():
        return path
    if not (base / path).exists() and path.exists():
        return Path(os.path.abspath(path))
    return Path(os.path.abspath(base / path))
