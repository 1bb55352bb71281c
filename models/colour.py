"""Colour: an HSV histogram of the region of interest (paper section 3.5).

Bins are a setting: (hue, saturation, value) = (8, 4, 2) -> 64 bins by default.
Low-saturation pixels carry little hue, so hue is binned as the others are but
the histogram is weighted toward saturated pixels only through its own bins; the
shard stores it as sqrt-normalised uint8 and compares with 1 - Bhattacharyya
(shards/codes.py), which is what `colour_distance` here computes on floats.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from shards.errors import InvalidInput

DEFAULT_BINS = (8, 4, 2)


def hsv_histogram(img: Image.Image, bins: tuple[int, int, int] = DEFAULT_BINS, box=None) -> np.ndarray:
    """Normalised HSV histogram (sum 1) of the image, or of box = (x, y, w, h) in pixels."""
    if box is not None:
        img = img.crop(check_box(box, img.size))
    hsv = np.asarray(img.convert("HSV"), dtype=np.int64).reshape(-1, 3)
    idx = np.zeros(len(hsv), np.int64)
    for channel, n in enumerate(bins):
        idx = idx * n + np.minimum(hsv[:, channel] * n // 256, n - 1)
    hist = np.bincount(idx, minlength=int(np.prod(bins))).astype(np.float64)
    return hist / max(hist.sum(), 1.0)


def colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - Bhattacharyya coefficient of two normalised histograms, in [0, 1]."""
    return float(max(0.0, 1.0 - np.sqrt(a * b).sum()))


def check_box(box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x, y, w, h) inside an image of `size` -> PIL crop box; anything else is InvalidInput."""
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"a box is x,y,w,h numbers, got {box!r}") from exc
    width, height = size
    if not all(np.isfinite([x, y, w, h])):
        raise InvalidInput(f"box values must be finite, got {box!r}")
    if x < 0 or y < 0:
        raise InvalidInput(f"box starts outside the image: {box!r}")
    if w < 2 or h < 2:
        raise InvalidInput(f"box has (nearly) zero area: {box!r}")
    if x + w > width + 0.5 or y + h > height + 0.5:
        raise InvalidInput(f"box {box!r} runs outside the {width}x{height} image")
    return int(x), int(y), int(round(x + w)), int(round(y + h))
