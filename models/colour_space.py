"""A photo's pixels in sRGB, as a browser shows them and as the catalog the models learnt from is.

A phone saves its photos in Display P3, a camera or an editor often in Adobe RGB, and the
file carries that ICC profile. Read as if they were sRGB, their colours come out duller
than the browser shows them: the colour a model reads and the HSV histogram a search
compares would not be the user's. A damaged or unusable profile leaves the pixels as stored.
"""
from __future__ import annotations

import io
from functools import lru_cache

from PIL import Image, ImageCms

MODES = {"RGB": "RGB", "RGBA": "RGBA", "CMYK": "RGB"}    # stored mode -> the mode read in sRGB


@lru_cache(maxsize=16)
def _transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """The transform to sRGB; None for a profile that is sRGB already (many JPEGs embed one),
    which would cost ~15 ns a pixel to change nothing. Built once per profile."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    if mode != "CMYK" and "srgb" in ImageCms.getProfileDescription(source).lower():
        return None
    return ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), mode, MODES[mode])


def in_srgb(img: Image.Image) -> Image.Image:
    """The photo converted from its embedded ICC profile to sRGB; without one, as it is."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in MODES:
        return img
    try:
        transform = _transform(bytes(icc), img.mode)
        return img if transform is None else ImageCms.applyTransform(img, transform)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):   # a damaged profile: the pixels as stored
        return img
