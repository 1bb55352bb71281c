"""Detector, guidance, colour and binary codes at tiny sizes."""
import numpy as np
import pytest
import torch
from PIL import Image

from models.colour import check_box, colour_distance, hsv_histogram
from models.detector import Detector, DetectorConfig, build_detector, guidance, guided_forward
from models.features import CodeBook
from shards.codes import unpack_bits
from shards.errors import InvalidInput

CLASSES = ("bag", "dress", "shoes")


def test_detector_forward_backward_on_one_box():
    torch.manual_seed(0)
    model = build_detector(DetectorConfig(classes=CLASSES, min_size=128, max_size=160), pretrained=False)
    model.train()
    x = torch.rand(3, 128, 128)
    target = {"boxes": torch.tensor([[20.0, 30.0, 90.0, 110.0]]), "labels": torch.tensor([2])}
    losses = model([x], [target])
    assert set(losses) >= {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        out = model([x])[0]
    assert set(out) == {"boxes", "labels", "scores"}


@pytest.mark.parametrize("pyramid", [False, True])
def test_guided_forward_is_the_plain_forward_with_disallowed_classes_masked(pyramid):
    torch.manual_seed(1)
    model = build_detector(DetectorConfig(classes=CLASSES, min_size=128, max_size=160, pyramid=pyramid),
                           pretrained=False).eval()
    xs = [torch.rand(3, 128, 150), torch.rand(3, 140, 128)]
    with torch.no_grad():
        plain, unmasked = model(xs), guided_forward(model, xs, torch.ones(len(CLASSES) + 1, dtype=torch.bool))
    for a, b in zip(plain, unmasked):   # the slow oracle: torchvision's own forward
        assert all(torch.equal(a[k], b[k]) for k in a)
    detector = Detector(model, DetectorConfig(classes=CLASSES), {})
    photo = Image.fromarray((np.random.default_rng(1).random((128, 150, 3)) * 255).astype(np.uint8))
    everything = detector.detect([photo])[0]["labels"].tolist()
    assert set(everything) - {2}          # the plain detector finds classes that guidance to dresses drops
    for allowed, labels in (({"dress"}, {2}), ({"dress", "shoes"}, {2, 3})):
        guided = detector.detect([photo], allowed)[0]
        assert len(guided["labels"]) and set(guided["labels"].tolist()) <= labels
        assert float(guided["scores"].max()) <= 1.0


def test_pyramid_warm_start_keeps_the_single_level_detectors_features():
    torch.manual_seed(2)
    single = build_detector(DetectorConfig(classes=CLASSES), pretrained=False).eval()
    pyramid = build_detector(DetectorConfig(classes=CLASSES, pyramid=True), pretrained=False).eval()
    pyramid.backbone.warm_start(single.backbone.state_dict())
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        levels = pyramid.backbone(x)
        assert torch.allclose(levels["1"], single.backbone(x), atol=1e-5)
    assert levels["0"].shape[-2:] == (16, 20) and levels["1"].shape[-2:] == (8, 10)
    model = pyramid.train()
    losses = model([x[0]], [{"boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0]]), "labels": torch.tensor([1])}])
    sum(losses.values()).backward()
    assert pyramid.backbone.fpn.inner_blocks[2][0].weight.grad.abs().sum() > 0   # the top-down path learns


def test_guidance_maps_a_category_to_its_detector_classes():
    mapping = {"Dresses": ["dress"], "Handbags": ["bag", "purse"]}
    assert guidance(mapping, "Handbags") == {"bag", "purse"}
    assert guidance(mapping, "Spaceships") is None and guidance(mapping, None) is None


def test_hsv_histogram_of_a_solid_colour_lands_in_its_bin():
    red = Image.new("RGB", (40, 30), (255, 0, 0))
    h = hsv_histogram(red, (8, 4, 2))
    assert h.sum() == pytest.approx(1.0)
    assert h.argmax() == 0 * 8 + 3 * 2 + 1          # hue bin 0, top saturation, top value
    blue = hsv_histogram(Image.new("RGB", (40, 30), (0, 0, 255)), (8, 4, 2))
    assert colour_distance(h, h) == pytest.approx(0.0, abs=1e-9)
    assert colour_distance(h, blue) == pytest.approx(1.0)


@pytest.mark.parametrize("box", [(-1, 0, 10, 10), (0, 0, 0, 10), (5, 5, 100, 10), ("a", 1, 2, 3), (1, 2, 3),
                                 (0, 0, float("nan"), 10)])
def test_bad_boxes_are_clear_errors(box):
    with pytest.raises(InvalidInput):
        check_box(box, (50, 40))


def test_codes_pack_and_unpack_identically_and_split_the_catalog_in_half():
    rng = np.random.default_rng(0)
    feats = np.abs(rng.standard_normal((500, 64))) @ rng.standard_normal((64, 128))   # post-ReLU-like
    book = CodeBook.fit(feats, 128, itq_iterations=10)
    codes = book.encode(feats)
    bits = unpack_bits(codes)
    assert (bits == (book.project(feats) > 0)).all()          # packing loses nothing
    assert np.abs(bits.mean(axis=0) - 0.5).max() < 0.02        # each bit halves the catalog


def test_copy_paste_adds_the_pasted_box_and_drops_the_boxes_it_hides(tmp_path):
    from models.train_detector import copy_paste
    product = tmp_path / "p.jpg"
    Image.new("RGB", (60, 80), (200, 30, 30)).save(product)
    street = Image.new("RGB", (320, 320), (40, 120, 40))
    # one box covering the whole photo (the paste can hide at most ~half of it) and one tiny one
    target = {"boxes": torch.tensor([[0.0, 0.0, 320.0, 320.0], [150.0, 150.0, 170.0, 170.0]]),
              "labels": torch.tensor([1, 3])}
    for seed in range(20):
        x, t = copy_paste(street, target, product, 2, np.random.default_rng(seed))
        assert x.shape == (3, 640, 640) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        x0, y0, x1, y1 = t["boxes"][-1].tolist()
        assert t["labels"][-1] == 2
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 640
        assert 0.39 * 640 <= y1 - y0 <= 0.71 * 640 + 2      # 40-70 % of the photo's height, rotation aside
        red = x[0, int(y0) + 2: int(y1) - 2, int(x0) + 2: int(x1) - 2].mean()
        assert red > 0.5                                    # the product is inside its box
        assert torch.equal(t["boxes"][0], target["boxes"][0] * 2)  # the big box is scaled, kept
        tiny = target["boxes"][1] * 2
        ix = max(0.0, min(x1, tiny[2]) - max(x0, tiny[0]))
        iy = max(0.0, min(y1, tiny[3]) - max(y0, tiny[1]))
        hidden = ix * iy >= 0.5 * 40 * 40
        assert (len(t["boxes"]) == 2) == bool(hidden)       # the tiny box goes exactly when mostly hidden


def test_pick_box_weighs_confidence_by_area():
    from models.detector import pick_box
    det = {"scores": torch.tensor([0.9, 0.6, 0.2]),
           "boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0],      # small, confident (a shoe)
                                  [0.0, 0.0, 100.0, 160.0],      # big, less so (the coat)
                                  [0.0, 0.0, 200.0, 200.0]])}    # the biggest, under the threshold
    assert pick_box(det, (200, 200), 0.3, 0.0) == (10, 10, 30, 30)     # score alone
    assert pick_box(det, (200, 200), 0.3, 0.5) == (0, 0, 100, 160)     # 0.6*0.63 > 0.9*0.1
    assert pick_box(det, (200, 200), 0.95, 0.5) is None                # nothing confident enough
    empty = {"scores": torch.zeros(0), "boxes": torch.zeros(0, 4)}
    assert pick_box(empty, (200, 200), 0.3, 0.5) is None


def test_inset_box_keeps_the_inner_part_around_the_same_centre():
    from models.detector import inset_box
    assert inset_box((0, 0, 100, 50), 0.1) == (10, 5, 90, 45)
    assert inset_box((0, 0, 100, 50), 0.0) == (0, 0, 100, 50)
    assert inset_box((5, 5, 8, 9), 0.4) == (5, 5, 8, 9)          # too small to shrink: unchanged
    rng = np.random.default_rng(0)
    for _ in range(200):
        x0, y0 = (int(v) for v in rng.integers(0, 300, 2))
        x1, y1 = x0 + int(rng.integers(2, 300)), y0 + int(rng.integers(2, 300))
        a, b, c, d = inset_box((x0, y0, x1, y1), 0.1)
        assert x0 <= a < c <= x1 and y0 <= b < d <= y1 and c - a >= 2 and d - b >= 2
        assert abs((a + c) - (x0 + x1)) <= 1 and abs((b + d) - (y0 + y1)) <= 1


def test_mean_ap_reads_each_class_ranking_and_skips_classes_without_ground_truth():
    from models.train_detector import mean_ap
    box = np.array([[0.0, 0.0, 10.0, 10.0]])
    gts = [{"boxes": box, "labels": np.array([1])}, {"boxes": box, "labels": np.array([1])}]
    # class 1: a miss ranked first (score 0.9, wrong place), then both hits. Precision after
    # each hit is 1/2 and 2/3; all-point interpolation takes the best precision at or
    # beyond each recall, so AP = 2/3 (without the envelope it would be 7/12)
    dets = [{"boxes": np.array([[50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 10.0]]),
             "labels": np.array([1, 1]), "scores": np.array([0.9, 0.8])},
            {"boxes": box, "labels": np.array([1]), "scores": np.array([0.7])}]
    assert mean_ap(dets, gts, n_classes=3, thr=0.5) == pytest.approx(2 / 3)
    # a detection of a class no image has (class 2) changes nothing; a low score is still a hit
    dets[1] = {"boxes": np.concatenate([box, box]), "labels": np.array([2, 1]), "scores": np.array([0.99, 0.002])}
    assert mean_ap(dets, gts, n_classes=3, thr=0.5) == pytest.approx(2 / 3)
    assert mean_ap(dets, gts, n_classes=3, thr=0.9999) == pytest.approx(2 / 3)


def test_ranked_detections_lowers_the_floor_while_measured_and_restores_it():
    from models.detector import Detector
    from models.train_detector import AP_DETECTIONS, AP_SCORE_FLOOR, ranked_detections
    cfg = DetectorConfig(classes=CLASSES, min_size=128, max_size=160)
    det = Detector(build_detector(cfg, pretrained=False), cfg, {})
    heads = det.model.roi_heads
    before = heads.score_thresh, heads.detections_per_img
    with ranked_detections(det):
        assert (heads.score_thresh, heads.detections_per_img) == (AP_SCORE_FLOOR, AP_DETECTIONS)
    assert (heads.score_thresh, heads.detections_per_img) == before
    with pytest.raises(RuntimeError):
        with ranked_detections(det):
            raise RuntimeError("a failed image")
    assert (heads.score_thresh, heads.detections_per_img) == before


def test_repeat_factor_sampling_brings_photos_of_rare_classes_more_often():
    import random
    from models.train_detector import repeat_factors, repeated
    labels = [[1, 1]] * 99 + [[1, 2]]            # class 2 is in 1 photo of 100
    f = repeat_factors(labels, threshold=0.1)
    assert f[:99].tolist() == [1.0] * 99
    assert f[99] == pytest.approx((0.1 / 0.01) ** 0.5)   # ~3.16: the LVIS rule
    assert repeat_factors(labels, threshold=0.001).tolist() == [1.0] * 100   # nothing that rare
    counts = np.zeros(100)
    for seed in range(400):
        order = repeated(f, random.Random(seed))
        assert set(order) == set(range(100))              # every photo at least once an epoch
        counts += np.bincount(order, minlength=100)
    assert counts[:99].tolist() == [400.0] * 99
    assert counts[99] / 400 == pytest.approx(f[99], abs=0.05)   # 3 times, a 4th 16 % of epochs
    assert repeated(f, random.Random(7)) == repeated(f, random.Random(7))
