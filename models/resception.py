"""ResCeption: Inception-v3 with a residual shortcut on every multi-convolution stream.

Built from torchvision's Inception-v3 blocks (paper section 3.1, Fig. 4): every
data-flow stream of an inception module that has two or more convolutions gets a
shortcut from the module's input to the stream's output — a 1x1 projection (+BN)
since the channel counts differ, strided where the stream is (a stride-2 valid 3x3
stream gets a stride-2 1x1 on the input cropped by one pixel, which lands on the
same centres). The shortcut wraps the stream's last convolution, so torchvision's
own forward passes stay as they are.

`width` scales every convolution's channels (1 = Inception-v3's shapes); the
multiples 1, 1/2, 1/4, 1/8, 1/16 keep every concatenation exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torchvision.models.inception import (BasicConv2d, Inception3, InceptionA, InceptionAux, InceptionB,
                                          InceptionC, InceptionD, InceptionE)


@dataclass(frozen=True)
class InceptionConfig:
    width: float = 0.25          # channel multiplier (1 = Inception-v3)
    image_size: int = 128        # >= 75
    residual: bool = True        # False: plain Inception-v3 (the paper's baseline in Fig. 5a)

    def __post_init__(self):
        if self.width not in (1, 0.5, 0.25, 0.125, 0.0625):
            raise ValueError(f"width must be one of 1, 1/2, 1/4, 1/8, 1/16, got {self.width!r}")
        if self.image_size < 75:
            raise ValueError(f"Inception-v3 needs images of at least 75 px, got {self.image_size!r}")

    @property
    def features(self) -> int:
        return int(2048 * self.width)


def _scaled(width: float):
    def conv(in_channels, out_channels, **kwargs):
        cin = in_channels if in_channels == 3 else int(in_channels * width)
        return BasicConv2d(cin, int(out_channels * width), **kwargs)
    return conv


class _Tap:
    """Holds a module's current input for the shortcuts inside it (a plain object, not a Module)."""
    x: torch.Tensor | None = None


class Shortcut(nn.Module):
    """Wraps a stream's last conv: out = conv(stream) + BN(1x1 conv(block input))."""

    def __init__(self, last: nn.Module, in_channels: int, out_channels: int, tap: _Tap, stride: int = 1,
                 crop: int = 0):
        super().__init__()
        self.last, self.tap, self.stride, self.crop = last, tap, stride, crop
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        src = self.tap.x
        if self.crop:
            src = src[:, :, self.crop:-self.crop, self.crop:-self.crop]
        return self.last(x) + self.bn(self.proj(src))


def _residual(block_cls, streams):
    """A subclass of a torchvision inception block with shortcuts on the named streams.

    streams: (attribute of the stream's last conv, its full-width out channels, stride).
    """
    class Residual(block_cls):
        def __init__(self, in_channels, *args, conv_block=None, width=1.0, **kwargs):
            super().__init__(in_channels, *args, conv_block=conv_block, **kwargs)
            self.tap = _Tap()
            cin = int(in_channels * width)
            for name, out, stride in streams:
                setattr(self, name, Shortcut(getattr(self, name), cin, int(out * width), self.tap, stride,
                                             crop=1 if stride == 2 else 0))

        def forward(self, x):
            self.tap.x = x
            try:
                return super().forward(x)
            finally:
                self.tap.x = None

    Residual.__name__ = Residual.__qualname__ = "Res" + block_cls.__name__
    return Residual


# The multi-convolution streams of each torchvision block (torchvision/models/inception.py).
ResInceptionA = _residual(InceptionA, [("branch5x5_2", 64, 1), ("branch3x3dbl_3", 96, 1)])
ResInceptionB = _residual(InceptionB, [("branch3x3dbl_3", 96, 2)])
ResInceptionC = _residual(InceptionC, [("branch7x7_3", 192, 1), ("branch7x7dbl_5", 192, 1)])  # 192 whatever c7
ResInceptionD = _residual(InceptionD, [("branch3x3_2", 320, 2), ("branch7x7x3_4", 192, 2)])
ResInceptionE = _residual(InceptionE, [("branch3x3_2a", 384, 1), ("branch3x3_2b", 384, 1),
                                       ("branch3x3dbl_3a", 384, 1), ("branch3x3dbl_3b", 384, 1)])


class InceptionEncoder(nn.Module):
    """Image (N x 3 x S x S, normalised) -> feature vector (N x 2048*width)."""

    def __init__(self, cfg: InceptionConfig):
        super().__init__()
        self.cfg = cfg
        conv = _scaled(cfg.width)
        if cfg.residual:
            blocks = [conv] + [partial(b, conv_block=conv, width=cfg.width) for b in
                               (ResInceptionA, ResInceptionB, ResInceptionC, ResInceptionD, ResInceptionE)]
        else:
            blocks = [conv] + [partial(b, conv_block=conv) for b in
                               (InceptionA, InceptionB, InceptionC, InceptionD, InceptionE)]
        self.net = Inception3(aux_logits=False, init_weights=True, inception_blocks=blocks + [InceptionAux])
        self.net.fc = nn.Identity()        # features, not ImageNet logits
        self.net.dropout = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)                 # N x 2048*width


def resception(*, width: float = 0.25, image_size: int = 128) -> InceptionEncoder:
    return InceptionEncoder(InceptionConfig(width=width, image_size=image_size, residual=True))


def inception_v3_plain(*, width: float = 0.25, image_size: int = 128) -> InceptionEncoder:
    return InceptionEncoder(InceptionConfig(width=width, image_size=image_size, residual=False))
