"""The system-filter figures of `eval retrieval`: scanned share, and misses counted in mAP."""
import numpy as np
import pytest
from PIL import Image

from models.data import Product
from models.filter_eval import average_precision_of, filter_report
from models.pipeline import Analysis
from shards.codes import id_key


def test_average_precision_counts_what_the_list_lacks():
    assert average_precision_of(np.array([1, 0, 1], bool), 2) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert average_precision_of(np.array([1, 0, 1], bool), 4) == pytest.approx((1 / 1 + 2 / 3) / 4)
    assert average_precision_of(np.array([], bool), 3) == 0.0


class ReadsGiven:
    """A stand-in for the query path: each query photo 'reads' the attributes it is given."""
    bits, w_colour = 64, 0.3

    def __init__(self, reads):
        self.reads = list(reads)

    def analyse_batch(self, images, detect=True):
        assert not detect   # catalog photos: the ROI is the whole photo
        out = []
        for _ in images:
            attrs = self.reads.pop(0)
            out.append(Analysis(category=None, category_source="auto", attributes=attrs, roi=(0, 0, 8, 8),
                                roi_source="whole image", code=np.zeros(1, np.uint64), hist=np.full(8, 1 / 8)))
        return out


def test_filter_report_scans_what_carries_the_read_tokens_and_counts_excluded_items_as_misses(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "p.jpg")
    fields = [("Shirts", "Men")] * 2 + [("Shirts", "Men")] * 14 + [("Tshirts", "Men")] * 10
    products = [Product(id=str(i), fields={"articleType": a, "gender": g}, title="t", image=tmp_path / "p.jpg")
                for i, (a, g) in enumerate(fields)]
    tokens = [[f"articleType={a}", f"gender={g}"] for a, g in fields]
    tokens[2] = ["articleType=Tshirts", "gender=Men"]    # the catalog read one shirt wrongly
    catalog = (np.zeros((len(products), 1), np.uint64), np.full((len(products), 8), 1 / 8), tokens)
    pipeline = ReadsGiven([[("articleType=Shirts", 0.95), ("gender=Men", 0.5)],    # right, and sure
                           [("articleType=Tshirts", 0.9), ("gender=Men", 0.5)]])   # wrong, and sure
    out = filter_report(pipeline, products, np.array([0, 1]), catalog, log=lambda s: None)
    # the gallery is the 24 other products; 13 carry articleType=Shirts (>= k, so nothing relaxes)
    # and 11 carry Tshirts, so the two queries scan 13/24 and 11/24
    assert out["scanned_fraction"] == pytest.approx((13 / 24 + 11 / 24) / 2)
    assert out["relaxed_fraction"] == 0.0 and out["required_category_right"] == 0.5
    # 14 relevant shirts: the first query finds 13 of them first, the second none of them first
    first = 13 / 14
    # equal scores rank by id key: where the mis-read shirt falls among the 10 t-shirts
    order = sorted([2] + list(range(16, 26)), key=id_key)
    second = average_precision_of(np.array([i == 2 for i in order]), 14)
    assert out["map_filtered"] == pytest.approx((first + second) / 2)
    assert out["map_unfiltered"] > out["map_filtered"]


def test_a_policy_of_fields_requires_only_those_and_keeps_the_rest_as_bonus(tmp_path):
    from models.pipeline import WHAT_IT_IS
    Image.new("RGB", (8, 8)).save(tmp_path / "p.jpg")
    n = 30
    products = [Product(id=str(i), fields={"articleType": "Shirts", "gender": "Men"}, title="t",
                        image=tmp_path / "p.jpg") for i in range(n)]
    tokens = [["articleType=Shirts", "gender=Men", f"baseColour={'Blue' if i % 3 else 'Red'}"] for i in range(n)]
    catalog = (np.zeros((n, 1), np.uint64), np.full((n, 8), 1 / 8), tokens)
    read = [("articleType=Shirts", 0.97), ("gender=Men", 0.9), ("baseColour=Blue", 0.95)]
    every = filter_report(ReadsGiven([read]), products, np.array([0]), catalog, log=lambda s: None)
    what = filter_report(ReadsGiven([read]), products, np.array([0]), catalog, fields=WHAT_IT_IS, log=lambda s: None)
    # every shirt is relevant: requiring the colour scans and finds only the 20 blue ones of 29
    assert every["scanned_fraction"] == pytest.approx(20 / 29) and every["map_filtered"] == pytest.approx(20 / 29)
    assert what["scanned_fraction"] == 1.0 and what["map_filtered"] == pytest.approx(1.0)
