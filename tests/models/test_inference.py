"""Networks made ready to serve compute what they computed before: the unfolded network,
batch norms and all, is the oracle, on random input and with random batch-norm statistics."""
import copy

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from models.attributes import EncoderConfig, build_encoder
from models.detector import Detector, DetectorConfig, build_detector
from models.inference import fold_batchnorm, ready_to_serve
from models.pipeline import Pipeline

from ..cluster.tiny_assets import make_tiny_assets


def _randomise_batchnorms(net: nn.Module, seed: int) -> int:
    """Statistics and affine terms far from the identity, so a fold that drops one shows."""
    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.2)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.3)
                n += 1
    return n


def _batchnorms(net: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())


@pytest.mark.parametrize("kind,size", [("efficientnet_lite0", 96), ("resception", 80)])
def test_a_folded_encoder_computes_what_the_unfolded_one_did(kind, size):
    torch.manual_seed(0)
    net, _ = build_encoder(EncoderConfig(kind=kind, width=0.0625, image_size=size, pretrained=False))
    n = _randomise_batchnorms(net.eval(), seed=1)
    oracle = copy.deepcopy(net)
    assert fold_batchnorm(net) == n and _batchnorms(net) == 0     # every one folded, none left behind
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        want = oracle(x)
        assert torch.allclose(net(x), want, rtol=1e-4, atol=1e-4)
        ready_to_serve(net)
        assert torch.allclose(net(x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pyramid", [False, True])
def test_a_folded_detector_finds_the_same_boxes(pyramid):
    torch.manual_seed(0)
    cfg = DetectorConfig(classes=("shirt", "bag"), min_size=128, max_size=160, pyramid=pyramid)
    model = build_detector(cfg, pretrained=False).eval()
    _randomise_batchnorms(model, seed=2)
    oracle = copy.deepcopy(model)
    ready_to_serve(model)
    assert _batchnorms(model) == 0
    x = torch.rand(2, 3, 128, 160)
    with torch.no_grad():        # the trunk and its pyramid are what folding touches
        got, want = model.backbone(x), oracle.backbone(x)
        if not pyramid:
            got, want = {"0": got}, {"0": want}
        assert got.keys() == want.keys()
        assert all(torch.allclose(got[k], want[k], rtol=1e-4, atol=1e-4) for k in want)
    # the detections, guided, through the Detector the query path uses; the random detector's
    # scores tie, so each class's scores are compared as sorted lists
    det, ref = Detector(model, cfg, {"Shirts": ["shirt"]}), Detector(oracle, cfg, {"Shirts": ["shirt"]})
    photo = Image.fromarray((np.random.default_rng(3).random((150, 130, 3)) * 255).astype(np.uint8))
    (g,), (w,) = det.detect([photo], allowed={"shirt"}), ref.detect([photo], allowed={"shirt"})
    assert len(w["labels"]) > 0 and sorted(g["labels"].tolist()) == sorted(w["labels"].tolist())
    assert torch.allclose(g["scores"].sort().values, w["scores"].sort().values, atol=1e-4)


def test_folding_a_network_in_training_mode_is_refused_and_changes_nothing():
    net, _ = build_encoder(EncoderConfig(kind="resception", width=0.0625, image_size=80, pretrained=False))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(net.train())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_the_loaded_pipeline_is_folded_and_reads_as_the_unfolded_networks(tmp_path, monkeypatch):
    assets = make_tiny_assets(tmp_path / "assets")
    served = Pipeline.load(assets, device="cpu")
    assert _batchnorms(served.attributes) == _batchnorms(served.features) == 0
    monkeypatch.setattr("models.inference.ready_to_serve", lambda net: net)
    plain = Pipeline.load(assets, device="cpu")
    assert _batchnorms(plain.attributes) > 0
    photo = Image.fromarray((np.random.default_rng(4).random((120, 90, 3)) * 255).astype(np.uint8))
    a, b = served.query(photo), plain.query(photo)
    assert [t for t, _ in a.attributes] == [t for t, _ in b.attributes]
    assert np.allclose([p for _, p in a.attributes], [p for _, p in b.attributes], atol=1e-4)
    assert np.array_equal(a.code, b.code) and np.allclose(a.hist, b.hist)
