"""`eval roi` end to end on a tiny COCO folder: the guided figures can only gain on the plain ones."""
import json

import numpy as np
import torch
from PIL import Image

from models.detector import Detector, DetectorConfig, build_detector
from models.train_detector import IOUS, evaluate_detector

CLASSES = ("bag", "dress", "shoes")


def tiny_coco(folder, n=6, seed=0):
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        photo = (rng.random((128, 160, 3)) * 255).astype(np.uint8)
        Image.fromarray(photo).save(folder / "images" / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 160, "height": 128})
        for j, cat in enumerate(rng.choice(3, 2, replace=False)):
            x, y = int(rng.integers(0, 40)), int(rng.integers(0, 30))
            annotations.append({"id": 10 * i + j, "image_id": i, "category_id": int(cat) + 1,
                                "bbox": [x, y, int(rng.integers(60, 110)), int(rng.integers(60, 90))]})
    (folder / "annotations.json").write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)]}))
    return folder


def test_eval_roi_guided_figures_never_fall_below_the_plain_ones(tmp_path):
    torch.manual_seed(0)
    cfg = DetectorConfig(classes=CLASSES, min_size=128, max_size=160)
    detector = Detector(build_detector(cfg, pretrained=False), cfg,
                        {"Handbags": ["bag"], "Dresses": ["dress"], "Heels": ["shoes"]})
    floor = detector.model.roi_heads.score_thresh
    out = evaluate_detector(detector, tiny_coco(tmp_path / "coco"))
    assert out["images"] == 6 and out["classes"] == 3
    for key in ("map", "guided_map", "guided_softmax_map"):
        assert set(out[key]) == {str(t) for t in IOUS}
        assert all(0.0 <= v <= 1.0 for v in out[key].values())
    assert out["map"]["0.5"] > 0        # a random detector still hits some of these large boxes
    for t in map(str, IOUS):   # guidance drops only false positives: each class's precision can only rise
        assert out["guided_map"][t] >= out["map"][t]
    assert out["guided_map"]["0.5"] > out["map"]["0.5"]
    # the detector's thresholds are restored after the measurement
    assert detector.model.roi_heads.score_thresh == floor


def test_eval_roi_measures_what_it_can_read_and_says_what_it_left_out(tmp_path):
    torch.manual_seed(0)
    cfg = DetectorConfig(classes=CLASSES, min_size=128, max_size=160)
    detector = Detector(build_detector(cfg, pretrained=False), cfg, {"Dresses": ["dress"]})
    folder = tiny_coco(tmp_path / "coco", n=4)
    d = json.loads((folder / "annotations.json").read_text())
    d["images"].append({"id": 99, "file_name": "gone.jpg", "width": 160, "height": 128})
    d["categories"].append({"id": 9, "name": "spacesuit"})
    d["annotations"] += [{"id": 901, "image_id": 0, "category_id": 9, "bbox": [5, 5, 50, 50]},
                         {"id": 902, "image_id": 1, "category_id": 1, "bbox": [5, 5, 1, 40]},
                         {"id": 903, "image_id": 99, "category_id": 1, "bbox": [5, 5, 50, 50]}]
    (folder / "annotations.json").write_text("\ufeff" + json.dumps(d), encoding="utf-8")   # a BOM, as some tools write
    out = evaluate_detector(detector, folder)
    assert out["images"] == 4 and out["unreadable_images"] == 1 and out["unreadable_files"] == ["gone.jpg"]
    assert out["boxes"] == 8 and out["boxes_of_unknown_classes"] == {"spacesuit": 1} and out["boxes_too_small"] == 1
