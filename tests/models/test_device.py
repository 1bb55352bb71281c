"""The pipeline's networks move to a device together, and what they return comes back to the CPU.

No GPU here: `meta` stands in for the device where only where a tensor lives is checked,
and the CPU run is the reference for the values (a replica given a GPU runs the same code).
"""
import numpy as np
import torch
from PIL import Image

from models.detector import Detector, DetectorConfig, build_detector
from models.pipeline import Pipeline

from ..cluster.tiny_assets import make_tiny_assets


def _tiny_detector():
    cfg = DetectorConfig(classes=("shirt", "bag"), min_size=128, max_size=160)
    return Detector(build_detector(cfg, pretrained=False), cfg, {"Shirts": ["shirt"]})


def test_to_moves_every_network_and_no_title_model(tmp_path):
    p = Pipeline.load(make_tiny_assets(tmp_path / "assets"), device="cpu")
    p.detector = _tiny_detector()
    assert p.to("meta") is p and p.device == torch.device("meta")
    for net in (p.attributes, p.features, p.detector.model):
        assert {t.device.type for t in [*net.parameters(), *net.buffers()]} == {"meta"}


def test_a_pipeline_loaded_for_the_cpu_reads_as_the_default_one(tmp_path):
    assets = make_tiny_assets(tmp_path / "assets")
    default, on_cpu = Pipeline.load(assets), Pipeline.load(assets, device="cpu")
    assert on_cpu.device == torch.device("cpu")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 70, 3), dtype=np.uint8))
    a, b = default.query(img), on_cpu.query(img)
    assert a.attributes == b.attributes and np.array_equal(a.code, b.code) and np.allclose(a.hist, b.hist)


def test_detections_come_back_on_the_cpu():
    det = _tiny_detector()
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 100, 3), dtype=np.uint8))
    for allowed in (None, {"shirt"}):
        (found,) = det.detect([img], allowed)
        assert set(found) == {"boxes", "scores", "labels"}
        assert all(v.device.type == "cpu" for v in found.values())
