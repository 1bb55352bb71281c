"""Option 1 with the catalog picking the ROI among the detector's top regions (Pipeline.query(match=...))."""
import numpy as np
import pytest
from PIL import Image

from models.detector import inset_box
from models.framing import on_square
from models.pipeline import Pipeline

from ..cluster.tiny_assets import make_tiny_assets


class StubDetector:
    """Three fixed regions, as a real detector's top detections would be (a logic test only)."""
    mapping: dict = {}
    regions = [(0, 0, 40, 40), (50, 60, 150, 200), (10, 100, 60, 190)]

    def boxes(self, image, allowed, top):
        return list(self.regions[:top])

    def appearance_box(self, box):
        return inset_box(box, 0.1)

    def best_box(self, image, allowed):
        return self.regions[1]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    p = Pipeline.load(make_tiny_assets(tmp_path_factory.mktemp("assets")))
    p.detector = StubDetector()
    return p


def _photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (240, 200, 3), dtype=np.uint8))


@pytest.mark.parametrize("best", [0, 1, 2])
def test_the_region_with_the_lowest_match_score_becomes_the_roi(pipeline, best):
    img = _photo()
    seen = {}

    def match(codes, hists):
        seen["n"] = len(codes)
        scores = np.ones(len(codes))
        scores[best] = 0.1
        return scores

    a = pipeline.query(img, match=match)
    x0, y0, x1, y1 = StubDetector.regions[best]
    assert seen["n"] == 4                     # three detections and the whole photo
    assert a.roi == (x0, y0, x1 - x0, y1 - y0) and a.roi_source == "best match"
    in_roi = pipeline.query(img, box=(x0, y0, x1 - x0, y1 - y0))
    assert a.attributes == in_roi.attributes                # read in the region itself
    lx0, ly0, lx1, ly1 = inset_box(StubDetector.regions[best], 0.1)
    look = pipeline.query(img, box=(lx0, ly0, lx1 - lx0, ly1 - ly0))
    assert np.array_equal(a.code, look.code) and np.allclose(a.hist, look.hist)    # described inset


def test_the_whole_photo_can_win(pipeline):
    img = _photo()
    a = pipeline.query(img, match=lambda codes, hists: [1.0, 1.0, 1.0, 0.0])
    assert a.roi == (0, 0, img.width, img.height) and a.roi_source == "whole image"


def test_a_match_that_miscounts_is_an_error(pipeline):
    with pytest.raises(ValueError, match="4 regions"):
        pipeline.query(_photo(), match=lambda codes, hists: [0.0])


def test_region_codes_are_the_codes_of_their_inset_crops(pipeline):
    img = _photo()
    rois, codes, hists = pipeline.regions(img)
    assert rois[-1] == (0, 0, img.width, img.height) and len(codes) == len(hists) == 4
    for (x0, y0, x1, y1), c in zip([inset_box(r, 0.1) for r in rois[:-1]], codes):
        assert np.array_equal(c, pipeline.query(img, box=(x0, y0, x1 - x0, y1 - y0)).code)
    square = on_square(img)             # the whole photo is not inset: it is framed as a whole photo is
    assert np.array_equal(codes[-1], pipeline.query(square, box=(0, 0) + square.size).code)


def test_a_detected_roi_is_read_whole_and_described_inset(pipeline):
    img = _photo()
    a = pipeline.query(img)
    x0, y0, x1, y1 = StubDetector.regions[1]
    assert a.roi == (x0, y0, x1 - x0, y1 - y0) and a.roi_source == "detector"
    assert a.attributes == pipeline.query(img, box=a.roi).attributes
    lx0, ly0, lx1, ly1 = inset_box(StubDetector.regions[1], 0.1)
    look = pipeline.query(img, box=(lx0, ly0, lx1 - lx0, ly1 - ly0))
    assert np.array_equal(a.code, look.code) and np.allclose(a.hist, look.hist)
    assert not np.array_equal(a.code, pipeline.query(img, box=a.roi).code)   # the inset changed what was read


def test_a_big_photos_regions_come_back_in_its_own_pixels(pipeline):
    """The detector reads a copy of at most WORKING_SIDE a side; its regions are scaled back."""
    from models.framing import scale_box, working_copy
    big = _photo().resize((2000, 2400), Image.BICUBIC)
    _, factor = working_copy(big)
    rois, codes, _ = pipeline.regions(big)
    assert rois == [scale_box(r, factor, big.size) for r in StubDetector.regions] + [(0, 0, 2000, 2400)]
    x0, y0, x1, y1 = scale_box(StubDetector.regions[1], factor, big.size)
    assert pipeline.query(big).roi == (x0, y0, x1 - x0, y1 - y0)
