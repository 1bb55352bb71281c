"""How a whole product photo is framed for the networks: on a square, as the catalog they learnt from.

The shared catalog's photos are 224 x 224 squares: a portrait product shot with its side
margins in the studio's white. A shop's own photos are often portrait (3:4, 4:5) or
landscape. Squashed to the networks' square input, the product reads wider or taller than
anything they learnt, and reads worse: on the validation photos cut to 3:4, attribute
precision fell from 0.891 to 0.877 squashed, and was 0.891 again placed on a square of
the photo's own border colour (models/RESULTS.md). A box's crop (the user's, the
detector's) is still squashed: the hard views they learnt street crops from were, and a
padded crop read worse there.

A photo bigger than WORKING_SIDE a side (a phone's 12 Mpixel, sent by the API or a batch
job) is first shrunk to it: the networks read a few hundred pixels of it, and a 4000 px
photo took 427 ms to read in full against 156 ms in its copy (models/RESULTS.md). Boxes
in and ROIs out stay in the photo's own pixels. models/data.py's decode_photo makes the
copy as it decodes (a JPEG at reduced scale), which is cheaper again.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

WORKING_SIDE = 1024     # larger than any photo of the evaluations (instance queries: 640 px high)


def border_colour(image: Image.Image) -> tuple[int, int, int]:
    """The median colour of the photo's outermost pixels: the studio's background, as a rule."""
    x = np.asarray(image.convert("RGB"))
    ring = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    return tuple(int(v) for v in np.median(ring, axis=0))


def on_square(image: Image.Image) -> Image.Image:
    """The photo centred on a square of its border colour; a square photo as it is."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    square = Image.new("RGB", (side, side), border_colour(image))
    square.paste(image.convert("RGB"), ((side - w) // 2, (side - h) // 2))
    return square


def working_copy(image: Image.Image) -> tuple[Image.Image, float]:
    """The photo at most WORKING_SIDE a side, and the factor from its pixels back to the photo's own.
    Pillow's resize filters over each output pixel's whole footprint, so the copy is smoothed."""
    factor = max(image.size) / WORKING_SIDE
    if factor <= 1:
        return image, 1.0
    size = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
    return image.resize(size, Image.BILINEAR), factor


def scale_box(box: tuple[int, int, int, int], factor: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A crop box (x0, y0, x1, y1) times `factor`, in whole pixels inside an image of `size`, never empty."""
    if factor == 1:
        return box
    x0, y0 = (min(max(0, round(v * factor)), n - 1) for v, n in zip(box[:2], size))
    x1, y1 = (min(max(lo + 1, round(v * factor)), n) for v, lo, n in zip(box[2:], (x0, y0), size))
    return x0, y0, x1, y1
