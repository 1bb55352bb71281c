"""Instance-level retrieval: the hard query maker, and the whole evaluation at tiny sizes."""
import csv
import shutil

import numpy as np
from PIL import Image

from models.instance_eval import instance_recall, make_hard

from ..cluster.tiny_assets import make_tiny_assets
from ..cluster.test_rest import small_catalog


def test_make_hard_pastes_the_product_inside_the_street_photo():
    rng = np.random.default_rng(0)
    product = Image.new("RGB", (60, 80), (200, 20, 20))
    street = Image.new("RGB", (300, 400), (20, 200, 20))
    for _ in range(20):
        img, (x, y, w, h) = make_hard(product, street, rng)
        assert img.height == 640 and 0 <= x and 0 <= y and x + w <= img.width and y + h <= img.height
        a = np.asarray(img).astype(int)
        centre = a[y + h // 2, x + w // 2]
        assert centre[0] > 120 and centre[1] < 110          # the product's red, through jitter and JPEG
        assert 0.4 * 640 <= h <= 0.7 * 640 + 2
        outside = a[:, : max(1, x)] if x > 5 else a[:, x + w:]
        if outside.size:
            assert np.median(outside[..., 1]) > 150          # the street photo's green around it


def test_instance_recall_runs_end_to_end_at_tiny_sizes(tmp_path):
    assets = make_tiny_assets(tmp_path / "assets")
    catalog = small_catalog(tmp_path / "catalog", n=12)   # its first photo is broken
    with open(catalog / "styles.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    (catalog / "images" / f"{rows[1]['id']}.jpg").unlink()          # and the second is missing
    untitled = {**rows[2], "id": "900001", "productDisplayName": ""}
    shutil.copy(catalog / "images" / f"{rows[2]['id']}.jpg", catalog / "images" / "900001.jpg")
    with open(catalog / "styles.csv", "w", newline="", encoding="utf-8-sig") as f:   # a spreadsheet's BOM
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows + [rows[3], untitled])                     # a repeated row, a blank title
    out = instance_recall(catalog, n_queries=4, assets=assets, log=lambda s: None)
    # measured on what can be: 13 ids, 2 photos unreadable; the repeat counted once; the photo reads the untitled
    assert out["queries"] == 4 and out["catalog"] == 11
    assert out["unreadable_images"] == 2 and sorted(out["unreadable_ids"]) == sorted([rows[0]["id"], rows[1]["id"]])
    assert out["repeated_ids"] == 1 and out["split"] is None
    for key in ("instance_recall_at_1", "instance_recall_at_10", "user_box_recall_at_1", "named_category_recall_at_1",
                "scanned_fraction", "named_category_scanned_fraction"):
        assert 0.0 <= out[key] <= 1.0
    assert out["instance_recall_at_1"] <= out["instance_recall_at_10"]


def test_cached_catalog_index_reads_back_what_was_indexed(tmp_path):
    """Items with fewer attributes than others come back without padding from the cache."""
    from types import SimpleNamespace

    from models.data import Product
    from models.instance_eval import index_catalog_items

    class Items:
        def items(self, imgs, titles):
            return [SimpleNamespace(code=np.full(4, i, np.uint64), hist=np.full(8, i / 8),
                                    index_tokens=lambda i=i: [f"f{j}=v{i}" for j in range(i % 3)])
                    for i, _ in enumerate(imgs)]

    Image.new("RGB", (8, 8)).save(tmp_path / "p.jpg")
    products = [Product(id=str(i), title="t", image=tmp_path / "p.jpg", fields={}) for i in range(5)]
    first = index_catalog_items(Items(), products, cache=tmp_path / "index.npz", log=lambda s: None)
    again = index_catalog_items(None, products, cache=tmp_path / "index.npz", log=lambda s: None)
    assert [[], ["f0=v1"], ["f0=v2", "f1=v2"], [], ["f0=v4"]] == first[2] == again[2]
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
