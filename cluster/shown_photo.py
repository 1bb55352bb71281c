"""An item's photo as a browser can show it (GET /items/{id}/image).

A stored photo is kept as it came (an upload's bytes, a catalog's file). Browsers show
JPEG, PNG, WebP, GIF, AVIF and BMP; those are sent as they are, under their own media
type. Others, chiefly HEIC (an iPhone's format, shown by Safari alone) and TIFF, are sent
as a JPEG of the photo read upright, made when asked. So is a photo bigger than the
`max_side` a caller asks for: a results page of 24 tiles on a phone should not download
a shop's 24 full-size photos.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image

SHOWN = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
         "AVIF": "image/avif", "BMP": "image/bmp"}
JPEG_QUALITY = 90


def for_browser(data: bytes, max_side: int | None = None) -> tuple[bytes, str]:
    """(bytes, media type) to send for a stored photo, at most `max_side` pixels a side when
    given; a photo no reader here knows goes as it is."""
    from models.data import decode_image   # registers the HEIC reader too
    from shards.errors import InvalidInput
    try:
        with Image.open(io.BytesIO(data)) as img:    # the header only: format and size
            kind, side = img.format, max(img.size)
    except Exception:                                # noqa: BLE001 -- decode_image says what is wrong
        kind, side = None, 0
    if kind in SHOWN and (max_side is None or side <= max_side):
        return data, SHOWN[kind]
    try:
        upright = decode_image(data, at_least=max_side)
    except InvalidInput:
        return data, "application/octet-stream"
    if max_side is not None:
        upright.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    upright.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue(), "image/jpeg"


def etag(path: Path, max_side: int | None) -> str:
    """Names this version of the answer: the stored file (a replaced photo is a new file), its
    size and time, and the size asked. A browser that holds it asks again with If-None-Match."""
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}|{max_side}".encode()
    return '"' + hashlib.blake2b(key, digest_size=12).hexdigest() + '"'
