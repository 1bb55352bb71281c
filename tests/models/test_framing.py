"""A whole photo is read on a square of its border colour, as the catalog's photos are framed
(models/framing.py); a box's crop is squashed to the networks' input, as the hard views were."""
import numpy as np
import pytest
from PIL import Image

from models.data import Product, image_array
from models.framing import WORKING_SIDE, border_colour, on_square, scale_box, working_copy
from models.pipeline import Pipeline

from ..cluster.tiny_assets import make_tiny_assets

BACKDROP = (236, 231, 225)


def portrait(w=150, h=200, seed=0):
    """A product on a plain backdrop that has a little noise, as a studio photo does."""
    rng = np.random.default_rng(seed)
    x = np.clip(np.array(BACKDROP) + rng.integers(-2, 3, (h, w, 3)), 0, 255).astype(np.uint8)
    y0, y1, x0, x1 = h // 5, 4 * h // 5, w // 4, 3 * w // 4
    x[y0:y1, x0:x1] = rng.integers(0, 255, (y1 - y0, x1 - x0, 3))
    return Image.fromarray(x)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    p = Pipeline.load(make_tiny_assets(tmp_path_factory.mktemp("assets")))
    assert p.detector is None
    return p


def test_the_border_colour_is_the_median_of_the_outermost_pixels():
    img = portrait()
    x = np.asarray(img)
    ring = [tuple(x[i, j]) for i in range(x.shape[0]) for j in range(x.shape[1])
            if i in (0, x.shape[0] - 1) or j in (0, x.shape[1] - 1)]
    assert border_colour(img) == tuple(int(np.median([p[c] for p in ring])) for c in range(3))
    assert all(abs(a - b) <= 2 for a, b in zip(border_colour(img), BACKDROP))


@pytest.mark.parametrize("size", [(150, 200), (200, 150), (151, 200), (64, 64)])
def test_a_photo_goes_centred_on_a_square_of_its_border_colour(size):
    img = portrait(*size)
    square = on_square(img)
    side = max(size)
    assert square.size == (side, side)
    if size[0] == size[1]:
        assert square is img
        return
    x, y = (side - size[0]) // 2, (side - size[1]) // 2
    assert square.crop((x, y, x + size[0], y + size[1])).tobytes() == img.tobytes()
    margin = np.asarray(square)[:, :x] if x else np.asarray(square)[:y]
    assert (margin.reshape(-1, 3) == border_colour(img)).all()


def test_a_whole_photo_is_read_on_its_square_and_answered_in_its_own_pixels(pipeline):
    img = portrait()
    whole = pipeline.query(img)
    squared = pipeline.query(on_square(img))
    assert whole.roi == (0, 0, 150, 200) and whole.roi_source == "whole image"
    assert whole.attributes == squared.attributes and np.array_equal(whole.code, squared.code)
    assert np.allclose(whole.hist, squared.hist)
    squashed = pipeline.query(img, box=(0, 0, 150, 200))       # what it was read as before
    assert not np.array_equal(whole.code, squashed.code)
    item = pipeline.item(img, "")
    assert np.array_equal(item.code, whole.code)              # a catalog item is framed the same


def test_a_box_is_squashed_not_padded(pipeline):
    img = portrait(seed=3)
    box = (20, 10, 60, 150)
    crop = img.crop((20, 10, 80, 160))
    in_box = pipeline.query(img, box=box)
    assert np.array_equal(in_box.code, pipeline.query(crop, box=(0, 0, 60, 150)).code)
    assert not np.array_equal(in_box.code, pipeline.query(crop).code)


def test_training_and_evaluation_arrays_frame_photos_the_same(tmp_path):
    img = portrait()
    img.save(tmp_path / "1.png")
    product = Product(id="1", fields={}, title="", image=tmp_path / "1.png")
    arr = image_array([product], 32)
    assert np.array_equal(arr[0], np.asarray(on_square(img).resize((32, 32), Image.BILINEAR)))


def test_a_big_photo_is_worked_on_in_a_smoothed_copy_at_most_working_side():
    small = portrait(300, 400)
    assert working_copy(small) == (small, 1.0)
    big = small.resize((3000, 4000), Image.NEAREST)
    copy, factor = working_copy(big)
    assert max(copy.size) == WORKING_SIDE and copy.size == (768, 1024) and factor == pytest.approx(4000 / 1024)
    assert np.array_equal(np.asarray(copy), np.asarray(big.resize((768, 1024), Image.BILINEAR)))


def test_scaled_boxes_are_the_float_product_in_whole_pixels_inside_the_image_and_never_empty():
    rng = np.random.default_rng(4)
    for _ in range(500):
        w, h = (int(v) for v in rng.integers(20, 3000, 2))
        factor = float(rng.uniform(0.05, 5))
        x0, y0 = int(rng.integers(0, w - 1)), int(rng.integers(0, h - 1))
        box = (x0, y0, int(rng.integers(x0 + 1, w + 1)), int(rng.integers(y0 + 1, h + 1)))
        size = (max(2, round(w * factor)), max(2, round(h * factor)))
        got = scale_box(box, factor, size)
        assert 0 <= got[0] < got[2] <= size[0] and 0 <= got[1] < got[3] <= size[1]
        for v, g, n in zip(box, got, size * 2):
            assert g == min(n, round(v * factor)) or abs(g - v * factor) <= 1     # clamped or one pixel off


def test_a_big_photo_is_read_as_its_copy_and_answered_in_its_own_pixels(pipeline):
    big = portrait(seed=5).resize((1500, 2000), Image.BICUBIC)
    copy, factor = working_copy(big)
    assert copy.size == (768, 1024)
    whole = pipeline.query(big)
    assert whole.roi == (0, 0, 1500, 2000) and whole.roi_source == "whole image"
    assert np.array_equal(whole.code, pipeline.query(copy).code)
    box = (300, 500, 900, 1200)
    in_box = pipeline.query(big, box=box)
    assert in_box.roi == box                                      # as the user drew it
    x0, y0, x1, y1 = scale_box((300, 500, 1200, 1700), 1 / factor, copy.size)
    assert np.array_equal(in_box.code, pipeline.query(copy, box=(x0, y0, x1 - x0, y1 - y0)).code)
    assert in_box.attributes == pipeline.query(copy, box=(x0, y0, x1 - x0, y1 - y0)).attributes
