"""ResCeption: shapes, and the shortcuts really add."""
import pytest
import torch
from torchvision.models.inception import InceptionA, InceptionB, InceptionD

from models.resception import (InceptionConfig, InceptionEncoder, ResInceptionA, ResInceptionB, ResInceptionC,
                               ResInceptionD, ResInceptionE, Shortcut, _scaled)


@pytest.mark.parametrize("residual", [True, False])
def test_feature_shapes(residual):
    enc = InceptionEncoder(InceptionConfig(width=0.0625, image_size=80, residual=residual)).eval()
    assert enc(torch.randn(2, 3, 80, 80)).shape == (2, 128)


def test_full_configuration_matches_inception_v3_shapes():
    enc = InceptionEncoder(InceptionConfig(width=1, image_size=299)).eval()
    assert enc(torch.randn(1, 3, 299, 299)).shape == (1, 2048)


@pytest.mark.parametrize("block,args,plain,shape", [
    (ResInceptionA, (64,), InceptionA, (1, 64, 9, 9)),
    (ResInceptionB, (), InceptionB, (1, 64, 9, 9)),
    (ResInceptionD, (), InceptionD, (1, 64, 9, 9)),
])
def test_shortcut_adds_a_projection_of_the_input(block, args, plain, shape):
    torch.manual_seed(0)
    conv = _scaled(0.25)
    in_ch = shape[1] * 4
    res = block(in_ch, *args, conv_block=conv, width=0.25).eval()
    base = plain(in_ch, *args, conv_block=conv).eval()
    # copy the shared convolutions, so the only difference is the shortcuts
    names = [n for n, m in res.named_modules() if isinstance(m, Shortcut)]
    base_state = {}
    for k, v in res.state_dict().items():
        owner = next((n for n in names if k.startswith(n + ".")), None)
        if owner is None:
            base_state[k] = v
        elif k.startswith(owner + ".last."):
            base_state[owner + "." + k[len(owner) + 6:]] = v
    base.load_state_dict(base_state, strict=True)
    x = torch.randn(shape)
    shortcuts = [m for m in res.modules() if isinstance(m, Shortcut)]
    assert shortcuts, "no shortcut in a residual block"
    assert not torch.allclose(res(x), base(x))          # the shortcut contributes
    for s in shortcuts:
        torch.nn.init.zeros_(s.proj.weight)
        torch.nn.init.zeros_(s.bn.bias)
    assert torch.allclose(res(x), base(x), atol=1e-6)   # and is nothing but an added projection


def test_every_multi_conv_stream_has_a_shortcut():
    counts = {}
    for cls, args, in_ch in [(ResInceptionA, (32,), 192), (ResInceptionB, (), 288), (ResInceptionC, (128,), 768),
                             (ResInceptionD, (), 768), (ResInceptionE, (), 1280)]:
        m = cls(in_ch, *args, conv_block=_scaled(0.0625), width=0.0625)
        counts[cls.__name__] = sum(isinstance(x, Shortcut) for x in m.modules())
    assert counts == {"ResInceptionA": 2, "ResInceptionB": 1, "ResInceptionC": 2, "ResInceptionD": 2,
                      "ResInceptionE": 4}


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="width"):
        InceptionConfig(width=0.3)
    with pytest.raises(ValueError, match="75"):
        InceptionConfig(image_size=32)
