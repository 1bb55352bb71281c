"""An item's photo as a browser shows it (cluster/shown_photo.py), without a server."""
import io

import numpy as np
from PIL import Image

from cluster.shown_photo import for_browser


def cutout_png(side: int) -> bytes:
    """A shop's cutout: the product opaque, the backdrop transparent and stored black."""
    x = np.zeros((side, side, 4), np.uint8)
    x[side // 4: 3 * side // 4, side // 4: 3 * side // 4] = (20, 20, 200, 255)
    buf = io.BytesIO()
    Image.fromarray(x, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def test_a_cutouts_tile_is_a_jpeg_on_white_not_on_the_black_stored_under_its_transparency():
    shown, media_type = for_browser(cutout_png(800), max_side=320)
    assert media_type == "image/jpeg"
    with Image.open(io.BytesIO(shown)) as tile:
        x = np.asarray(tile.convert("RGB")).astype(int)
    assert x.shape == (320, 320, 3)
    assert (x[:40] >= 250).all() and (x[:, :40] >= 250).all()            # the backdrop, white
    assert np.abs(x[160, 160] - (20, 20, 200)).max() <= 8                # the product
    small = cutout_png(200)
    assert for_browser(small, max_side=320) == (small, "image/png")      # a browser lays it on the page itself
