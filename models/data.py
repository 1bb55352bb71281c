"""The data: product catalogs (CSV + images), COCO boxes, fixed splits, image decoding.

The dataset root is a setting: `FASHION_DATA` in the environment, else
`../shared/datasets` beside the project. A catalog is a folder with `styles.csv`
(id, gender, masterCategory, subCategory, articleType, baseColour, season, year,
usage, productDisplayName) and `images/<id>.jpg` (or .jpeg, .png, .webp).
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pi_heif import register_heif_opener

from shards.errors import InvalidInput

from .colour_space import in_srgb
from .framing import WORKING_SIDE, on_square, working_copy

PROJECT = Path(__file__).resolve().parents[1]
SHIPPED = Path(__file__).resolve().parent / "assets"
ASSETS = Path(os.environ.get("FASHION_ASSETS", SHIPPED))       # the model files the pipeline loads
SPLITS_FILE = SHIPPED / "splits.json"
CATALOG_COLUMNS = ("id", "gender", "masterCategory", "subCategory", "articleType", "baseColour",
                   "season", "usage", "productDisplayName")
MAX_PIXELS = 40_000_000          # decompression-bomb guard for anything we decode
EXIF_ORIENTATION = 0x0112
register_heif_opener()           # HEIC: an iPhone's own photo format (decoding only, libheif + libde265)
EMPTY_VALUES = {"", "NA", "N/A", "null", "None"}
PHOTO_SUFFIXES = (".jpeg", ".JPG", ".JPEG", ".png", ".PNG", ".webp")   # looked for when <id>.jpg is not there


def data_root() -> Path:
    return Path(os.environ.get("FASHION_DATA", PROJECT.parent / "shared" / "datasets"))


def products_dir() -> Path:
    return data_root() / "fashion-products"


@dataclass(frozen=True)
class Product:
    id: str
    fields: dict            # field -> value, empty fields left out
    title: str
    image: Path                       # or an http(s) URL in a feed's JSON lines (cluster/photo_fetch.py)
    attributes: tuple | None = None   # tokens to index it under, as given (a JSON-lines catalog); None: read
    source: str | None = None         # the URL a fetched photo came from, as an exported line records it


def read_csv(path: Path, columns, what: str) -> list[dict]:
    """A CSV's rows as dicts (tab-separated where the name ends .tsv, as product feeds often are);
    a missing file, a missing column, an unreadable or empty file is a clear InvalidInput (`what`
    names the file in the message: "catalog", "tags file")."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t" if Path(path).suffix.lower() == ".tsv" else ",")
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise InvalidInput(f"{path}: missing columns {missing}")
            rows = list(reader)
    except FileNotFoundError as exc:
        raise InvalidInput(f"no {what} at {path}") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(f"cannot read the {what} {path}: {exc}") from exc
    if not rows:
        raise InvalidInput(f"{path}: the {what} has no rows")
    return rows


def load_catalog(folder: str | os.PathLike | None = None, required=CATALOG_COLUMNS,
                 images: str | os.PathLike | None = None, photo=None) -> list[Product]:
    """Read a catalog: its folder (styles.csv inside) or its CSV, photos in `images` (default:
    images/ beside it).

    `required`: the columns the CSV must have; training and evaluation need every label
    (the default), indexing a shop's catalog only the id (a missing title is "", a missing
    label column leaves that field out). `photo(row)`: the photo a row names itself, or None
    for `images/<id>.jpg` (a shop's CSV may have a photo column); an InvalidInput it raises
    is the catalog's, naming the row."""
    folder = Path(folder) if folder else products_dir()
    path = folder / "styles.csv" if folder.is_dir() else folder
    images = Path(images) if images else path.parent / "images"
    out = []
    rows = read_csv(path, required, "catalog")
    title = next((c for c in TITLE_COLUMNS if c in rows[0]), None)
    for n, row in enumerate(rows, 1):
        item_id = (row.get("id") or "").strip()        # a row cut short has None there: an invalid id, reported
        fields = {k: row[k].strip() for k in CATALOG_COLUMNS[1:-1]
                  if row.get(k) is not None and row[k].strip() not in EMPTY_VALUES}
        try:
            named = photo(row) if photo else None
        except InvalidInput as exc:
            raise InvalidInput(f"{path}, row {n} (id {item_id!r}): {exc}") from None
        out.append(Product(id=item_id, fields=fields, title=(row.get(title) or "").strip() if title else "",
                           image=named or photo_of(images, item_id)))
    return out


TITLE_COLUMNS = ("productDisplayName", "title")   # the shared data's name, then a shop's usual one


def photo_of(images: Path, item_id: str) -> Path:
    """`images/<id>.jpg`, or the photo of that name with another usual suffix where only it exists."""
    path = images / f"{item_id}.jpg"
    if not path.exists():
        for suffix in PHOTO_SUFFIXES:
            if (other := images / f"{item_id}{suffix}").exists():
                return other
    return path


def make_splits(products: list[Product], seed: int = 0, val: float = 0.1, test: float = 0.1) -> dict:
    """Deterministic 80/10/10 split, stratified by articleType."""
    by_type = defaultdict(list)
    for p in products:
        by_type[p.fields.get("articleType", "")].append(p.id)
    rng = random.Random(seed)
    out = {"train": [], "val": [], "test": []}
    for t in sorted(by_type):
        ids = sorted(by_type[t])
        rng.shuffle(ids)
        n_test, n_val = int(round(len(ids) * test)), int(round(len(ids) * val))
        out["test"] += ids[:n_test]
        out["val"] += ids[n_test: n_test + n_val]
        out["train"] += ids[n_test + n_val:]
    return {k: sorted(v) for k, v in out.items()}


def load_splits() -> dict:
    """The splits every tool uses (models/assets/splits.json, made once by make_splits)."""
    if not SPLITS_FILE.exists():
        splits = make_splits(load_catalog())
        SPLITS_FILE.write_text(json.dumps({"seed": 0, "stratified_by": "articleType", **splits}))
    d = json.loads(SPLITS_FILE.read_text())
    return {k: set(d[k]) for k in ("train", "val", "test")}


def decode_image(data: bytes | os.PathLike | str, max_pixels: int = MAX_PIXELS,
                 at_least: int | None = None) -> Image.Image:
    """Decode an image (bytes or a path) to RGB, upright, refusing bombs and non-images with InvalidInput.

    Upright: a phone stores a portrait photo as landscape pixels plus an EXIF orientation,
    and browsers show it turned. The models read it the way it is shown, and a box (the
    user's, drawn on the page; an answer's ROI) is in that frame. `at_least`: the caller
    shrinks it to that many pixels a side, so a JPEG may be decoded at 1/2-1/8 scale, its long
    side never below that size (a thumbnail of a 12 Mpixel photo ~4x sooner).
    """
    img, _ = _read_upright(data, max_pixels, at_least)
    return on_white(in_srgb(eight_bits(img)))


class Photo(NamedTuple):
    """A photo read for the networks: `image` at most WORKING_SIDE a side; `factor` from its
    pixels back to the photo's as shown, and `size` (w, h) as shown: boxes in and ROIs out are there."""
    image: Image.Image
    factor: float
    size: tuple[int, int]


def decode_photo(data: bytes | os.PathLike | str, max_pixels: int = MAX_PIXELS) -> Photo:
    """A photo as the networks read it: decode_image's, then shrunk as working_copy shrinks it.

    Cheaper than decode_image then working_copy for a big photo: a JPEG is decoded at 1/2-1/8
    scale, and the colour profile (every iPhone photo has a Display P3 one) is converted on
    the small copy. A 12 Mpixel JPEG with a P3 profile: benchmarks/RESULTS.md.
    """
    img, shown = _read_upright(data, max_pixels, WORKING_SIDE)
    img = eight_bits(img)
    if img.mode in ("P", "PA", "1"):           # a palette shrinks by its nearest pixel: colours first
        img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    small, _ = working_copy(img)
    return Photo(on_white(in_srgb(small)), max(shown) / max(small.size), shown)


def as_photo(image: Image.Image | Photo) -> Photo:
    """A Photo as it is; a whole decoded image shrunk to its working copy."""
    if isinstance(image, Photo):
        return image
    small, factor = working_copy(image)
    return Photo(small, factor, image.size)


def _read_upright(data: bytes | os.PathLike | str, max_pixels: int,
                  at_least: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """The stored pixels turned as EXIF says (JPEG: at reduced scale when `at_least` allows),
    and the photo's size as shown, before any reduction."""
    import io
    try:
        src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else open(data, "rb")
    except OSError as exc:
        raise InvalidInput(f"cannot read image {data!r}: {exc}") from exc
    with src:
        try:
            img = Image.open(src)
            if img.width * img.height > max_pixels:
                raise InvalidInput(f"image of {img.width}x{img.height} pixels is over the limit of {max_pixels}")
            shown = img.size
            if img.width < 8 or img.height < 8:
                raise InvalidInput(f"image of {img.width}x{img.height} pixels is too small")
            if at_least is not None:     # JPEG only (others ignore it): the long side stays >= at_least
                img.draft("RGB", tuple(math.ceil(v * at_least / max(img.size)) for v in img.size))
            img.load()
        except InvalidInput:
            raise
        except UnidentifiedImageError as exc:     # its own text names a BytesIO object, not the file
            where = "" if isinstance(data, (bytes, bytearray)) else f" {data}"
            raise InvalidInput(f"not a readable image{where}: not a format Pillow decodes "
                               f"(JPEG, PNG, WebP, HEIC, AVIF, GIF, BMP, TIFF, ...)") from exc
        except Exception as exc:    # noqa: BLE001 -- a decoder plugin (HEIC's) raises anything on damage
            raise InvalidInput(f"not a readable image: {exc}") from exc
    try:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        if orientation != 1:
            img = ImageOps.exif_transpose(img)
            if orientation in (5, 6, 7, 8):    # turned a quarter: the shown photo is the stored one's sides swapped
                shown = shown[::-1]
    except Exception:     # noqa: BLE001 -- a damaged EXIF block: the pixels are fine, read them as stored
        pass
    return img, shown


def eight_bits(img: Image.Image) -> Image.Image:
    """A 16-bit or float grey photo (a 16-bit PNG, a scientific TIFF) as 8-bit grey. Pillow's own
    conversion to RGB clips instead of scaling: a 16-bit photo came out nearly all white."""
    if img.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return img
    x = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16") or (img.mode == "I" and x.max() > 255):
        x = x / 257                                  # 0..65535 -> 0..255
    elif img.mode == "F" and x.max() <= 1.0:
        x = x * 255                                  # 0..1 -> 0..255
    return Image.fromarray(np.clip(np.round(x), 0, 255).astype(np.uint8), "L")


def on_white(img: Image.Image) -> Image.Image:
    """RGB, a transparent part shown on white as a browser page shows it. Dropping the alpha
    would bare whatever colour the file stores under it, black as a rule: a shop's cutout
    PNG would become a product on black, read as no studio photo is."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:        # some pixel is not opaque
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def photo_in(folder: Path, name: str) -> Path:
    """A photo a folder's annotations name: relative to the folder, or else to its images/."""
    return folder / name if (folder / name).exists() else folder / "images" / Path(name).name


def load_coco(folder: str | os.PathLike) -> dict:
    """A COCO detection folder: annotations.json + images/. Returns the parsed json with paths."""
    folder = Path(folder)
    try:
        d = json.loads((folder / "annotations.json").read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{folder}: no readable annotations.json: {exc}") from exc
    for key in ("images", "annotations", "categories"):
        if key not in d:
            raise InvalidInput(f"{folder}/annotations.json has no {key!r}")
    by_image = defaultdict(list)
    for a in d["annotations"]:
        by_image[a["image_id"]].append(a)
    for im in d["images"]:
        im["path"] = photo_in(folder, im["file_name"])
        im["boxes"] = by_image.get(im["id"], [])
    return d


def usable_products(products: list[Product]) -> tuple[list[Product], dict]:
    """What an evaluation can measure: the first row of each id, if its photo decodes.

    Returns (products, report); the report counts what was left out, so a folder with a
    missing or broken photo is measured on the rest and says so, rather than failing or
    scoring a blank image.
    """
    seen, kept, unreadable, repeated = set(), [], [], 0
    for p in products:
        if p.id in seen:
            repeated += 1
            continue
        seen.add(p.id)
        try:
            decode_image(p.image)
        except InvalidInput:
            unreadable.append(p.id)
            continue
        kept.append(p)
    if not kept:
        raise InvalidInput(f"none of the {len(products)} rows has a readable photo")
    return kept, {"unreadable_images": len(unreadable), "unreadable_ids": unreadable[:20],
                  "repeated_ids": repeated}


def image_array(products: list[Product], size: int, cache: Path | None = None) -> np.ndarray:
    """All product images on a square (models/framing.py) at size x size, as one (n, size, size, 3)
    uint8 array (cached)."""
    if cache is not None and cache.exists():
        arr = np.load(cache)
        if arr.shape[0] == len(products):
            return arr
    arr = np.zeros((len(products), size, size, 3), np.uint8)
    for i, p in enumerate(products):
        try:
            arr[i] = np.asarray(on_square(decode_image(p.image)).resize((size, size), Image.BILINEAR))
        except InvalidInput:
            pass  # a missing or broken photo stays black; counted by the caller
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, arr)
    return arr
