"""How a whole product photo is framed for the networks: on a square, as the catalog they learnt from.

The shared catalog's photos are 224 x 224 squares: a portrait product shot with its side
margins in the studio's white. A shop's own photos are often portrait (3:4, 4:5) or
landscape. Squashed to the networks' square input, the product reads wider or taller than
anything they learnt, and reads worse: on the validation photos cut to 3:4, attribute
precision fell from 0.891 to 0.877 squashed, and was 0.891 again placed on a square of
the photo's own border colour (models/RESULTS.md). A box's crop (the user's, the
detector's) is still squashed: the hard views they learnt street crops from were, and a
padded crop read worse there.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


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
