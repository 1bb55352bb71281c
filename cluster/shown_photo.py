"""An item's photo as a browser can show it (GET /items/{id}/image).

A stored photo is kept as it came (an upload's bytes, a catalog's file). Browsers show
JPEG, PNG, WebP, GIF, AVIF and BMP; those are sent as they are, under their own media
type. Others, chiefly HEIC (an iPhone's format, shown by Safari alone) and TIFF, are sent
as a JPEG of the photo read upright, made when asked.
"""
from __future__ import annotations

import io

from PIL import Image

SHOWN = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
         "AVIF": "image/avif", "BMP": "image/bmp"}
JPEG_QUALITY = 90


def for_browser(data: bytes) -> tuple[bytes, str]:
    """(bytes, media type) to send for a stored photo; one no reader here knows goes as it is."""
    from models.data import decode_image   # registers the HEIC reader too
    from shards.errors import InvalidInput
    try:
        with Image.open(io.BytesIO(data)) as img:    # the header only: the format
            kind = img.format
    except Exception:                                # noqa: BLE001 -- decode_image says what is wrong
        kind = None
    if kind in SHOWN:
        return data, SHOWN[kind]
    try:
        upright = decode_image(data)
    except InvalidInput:
        return data, "application/octet-stream"
    out = io.BytesIO()
    upright.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue(), "image/jpeg"
