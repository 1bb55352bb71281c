"""The pipeline's networks move to a device together, and what they return comes back to the CPU.

No GPU here: `meta` stands in for the device where only where a tensor lives is checked.
The values on a real GPU against the CPU's are models/gpu_sweep/pipeline_check.py's job.
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


def test_load_takes_the_gpu_when_torch_sees_one_and_a_named_device_always(tmp_path, monkeypatch):
    """What a replica given a GPU relies on: with no device named, load() moves to cuda exactly when
    torch sees a GPU (the move itself is recorded, not made: there is none here)."""
    assets = make_tiny_assets(tmp_path / "assets")
    moved = []
    monkeypatch.setattr(Pipeline, "to", lambda self, device: moved.append(device) or self)
    for seen, named, want in [(True, None, "cuda"), (False, None, "cpu"), (True, "cpu", "cpu")]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda seen=seen: seen)
        Pipeline.load(assets, device=named)
        assert moved.pop() == want


def test_detections_come_back_on_the_cpu():
    det = _tiny_detector()
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 100, 3), dtype=np.uint8))
    for allowed in (None, {"shirt"}):
        (found,) = det.detect([img], allowed)
        assert set(found) == {"boxes", "scores", "labels"}
        assert all(v.device.type == "cpu" for v in found.values())
