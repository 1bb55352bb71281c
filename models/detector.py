"""The guided ROI detector (paper section 3.4): Faster R-CNN composed from torchvision parts.

One detector over all garment classes of the street-photo data (ccp-boxes), on an
EfficientNet-Lite0 trunk (ImageNet weights, the only ones offline here). Its
stride-16 stage, 112 channels, feeds one RPN level; with `pyramid`, a small feature
pyramid adds a stride-8 level for small things (jewellery, belts, watches) and tops
both levels down with the ImageNet stride-32 stage. Guidance: a fashion-category
maps to the detector classes it may appear as (models/assets/detector_classes.json);
the box classifier's softmax then runs over those classes only, so no other class is
detected, which cuts the false positives of everything else in a street photo.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from .data import SHIPPED
from .weights import read_weights

MAPPING_FILE = SHIPPED / "detector_classes.json"


@dataclass(frozen=True)
class DetectorConfig:
    classes: tuple[str, ...]
    min_size: int = 320
    max_size: int = 400
    trunk_blocks: int = 11          # EfficientNet-Lite0 blocks kept (stride 16 after block 10)
    frozen_blocks: int = 3
    score_threshold: float = 0.3
    area_weight: float = 0.5        # best_box ranks by score * (box area / photo area) ** area_weight
    appearance_inset: float = 0.1   # the code and colour are read in a detection less this much a side
    pyramid: bool = False           # stride-8 + stride-16 levels, topped down from stride 32 (PyramidTrunk)


class LiteTrunk(nn.Module):
    """EfficientNet-Lite0 stem + its first blocks -> one feature map (stride 16)."""

    def __init__(self, cfg: DetectorConfig, pretrained: bool = True):
        super().__init__()
        from .attributes import EfficientNetLite0Encoder, EncoderConfig
        enc = EfficientNetLite0Encoder(EncoderConfig(pretrained=pretrained, frozen_blocks=cfg.frozen_blocks))
        net = enc.net
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6(inplace=True))
        self.blocks = nn.ModuleList(net._blocks[: cfg.trunk_blocks])
        self.out_channels = net._blocks[cfg.trunk_blocks - 1]._bn2.num_features
        for m in [net._conv_stem, net._bn0, *net._blocks[: cfg.frozen_blocks]]:
            for p in m.parameters():
                p.requires_grad_(False)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return x                                          # N x 112 x H/16 x W/16


class PyramidTrunk(nn.Module):
    """All of EfficientNet-Lite0's blocks, tapped at strides 8, 16 and 32, and torchvision's
    FeaturePyramidNetwork over them; the stride-8 and stride-16 levels go to the RPN and RoI pool.

    `warm_start` makes the stride-16 level equal LiteTrunk's output exactly (identity
    lateral and output convolutions, a zero top-down from stride 32), so a trained
    single-level detector's RPN and box head start where they were.
    """
    TAPS = (4, 10, 15)   # the last block of the stride-8, -16 and -32 stages

    def __init__(self, cfg: DetectorConfig, pretrained: bool = True):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        self.lite = LiteTrunk(DetectorConfig(cfg.classes, trunk_blocks=self.TAPS[-1] + 1,
                                             frozen_blocks=cfg.frozen_blocks), pretrained)
        widths = [self.lite.blocks[t]._bn2.num_features for t in self.TAPS]
        self.out_channels = widths[1]
        self.fpn = FeaturePyramidNetwork(widths, self.out_channels)

    def warm_start(self, trunk_state: dict) -> None:
        self.lite.load_state_dict(trunk_state, strict=False)   # blocks 11-15 keep their ImageNet weights
        c = self.out_channels
        with torch.no_grad():
            for level in (0, 1):
                lateral, out = self.fpn.inner_blocks[level][0], self.fpn.layer_blocks[level][0]
                out.weight.zero_()
                out.weight[:, :, 1, 1] = torch.eye(c)
                out.bias.zero_()
                if level == 1:
                    lateral.weight.copy_(torch.eye(c)[:, :, None, None])
                    lateral.bias.zero_()
                else:   # the stride-8 level starts as the upsampled stride-16 one, plus a little detail
                    lateral.weight.mul_(0.1)
                    lateral.bias.zero_()
            self.fpn.inner_blocks[2][0].weight.zero_()
            self.fpn.inner_blocks[2][0].bias.zero_()

    def forward(self, x):
        x = self.lite.stem(x)
        taps = OrderedDict()
        for i, b in enumerate(self.lite.blocks):
            x = b(x)
            if i in self.TAPS:
                taps[str(len(taps))] = x
        out = self.fpn(taps)
        return OrderedDict([("0", out["0"]), ("1", out["1"])])


def build_detector(cfg: DetectorConfig, pretrained: bool = True) -> FasterRCNN:
    if cfg.pyramid:
        trunk = PyramidTrunk(cfg, pretrained)
        # same 12 anchors a place at both levels, so one RPN head serves both; RoIs under
        # 112 px (sqrt of area) are pooled at stride 8, the rest at stride 16
        anchors = AnchorGenerator(sizes=((16, 24, 32, 48), (32, 64, 128, 256)), aspect_ratios=((0.5, 1.0, 2.0),) * 2)
        pool = MultiScaleRoIAlign(featmap_names=["0", "1"], output_size=7, sampling_ratio=2, canonical_scale=112)
    else:
        trunk = LiteTrunk(cfg, pretrained)
        anchors = AnchorGenerator(sizes=((32, 64, 128, 256),), aspect_ratios=((0.5, 1.0, 2.0),))
        pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    return FasterRCNN(trunk, num_classes=len(cfg.classes) + 1, rpn_anchor_generator=anchors, box_roi_pool=pool,
                      min_size=cfg.min_size, max_size=cfg.max_size, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                      rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=300,
                      rpn_post_nms_top_n_test=100, box_detections_per_img=50, box_score_thresh=0.05)


def guidance(mapping: dict[str, list[str]], category: str | None) -> set[str] | None:
    """Detector classes a fashion-category may appear as; None = no guidance (all classes)."""
    if category is None or category not in mapping:
        return None
    return set(mapping[category])


def guided_forward(model: FasterRCNN, xs: list[torch.Tensor], keep: torch.Tensor) -> list[dict]:
    """FasterRCNN's eval forward, with the logits of classes where `keep` is False set to -inf
    before the softmax (their probability becomes 0, under any score threshold)."""
    sizes = [tuple(x.shape[-2:]) for x in xs]
    images, _ = model.transform(xs)
    features = model.backbone(images.tensors)
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    proposals, _ = model.rpn(images, features)
    heads = model.roi_heads
    pooled = heads.box_roi_pool(features, proposals, images.image_sizes)
    logits, regression = heads.box_predictor(heads.box_head(pooled))
    boxes, scores, labels = heads.postprocess_detections(logits.masked_fill(~keep, float("-inf")), regression,
                                                         proposals, images.image_sizes)
    found = [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(boxes, scores, labels)]
    return model.transform.postprocess(found, images.image_sizes, sizes)


def pick_box(det: dict, size: tuple[int, int], threshold: float, area_weight: float):
    """The box of best score * (area / photo area) ** area_weight among detections >= threshold."""
    scores, boxes = det["scores"], det["boxes"]
    keep = scores >= threshold
    if not bool(keep.any()):
        return None
    scores, boxes = scores[keep], boxes[keep]
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0) / float(size[0] * size[1])
    x0, y0, x1, y1 = (int(round(v)) for v in boxes[int(torch.argmax(scores * area ** area_weight))].tolist())
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1, y1


def inset_box(box: tuple[int, int, int, int], frac: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) shrunk by frac of its width and height on each side (never below 2 px)."""
    x0, y0, x1, y1 = box
    dx, dy = int(round(frac * (x1 - x0))), int(round(frac * (y1 - y0)))
    if x1 - x0 - 2 * dx < 2 or y1 - y0 - 2 * dy < 2:
        return box
    return x0 + dx, y0 + dy, x1 - dx, y1 - dy


class Detector:
    """A trained detector with its classes; `best_box` is the pipeline's ROI step."""

    def __init__(self, model: FasterRCNN, cfg: DetectorConfig, mapping: dict[str, list[str]]):
        self.model, self.cfg, self.mapping = model.eval(), cfg, mapping

    @torch.no_grad()
    def detect(self, images: list[Image.Image], allowed: set[str] | None = None) -> list[dict]:
        """Detections of each image; with `allowed`, guided: the box classifier's softmax runs over
        the allowed classes and background only, so a box that looks like a sibling of an
        allowed class (a coat read for a jacket) gives its probability to the allowed one
        instead of being dropped (with the category named, instance recall@1 0.88 against 0.82
        by filtering afterwards, same weights, models/RESULTS.md)."""
        dev = next(self.model.parameters()).device
        xs = [torch.from_numpy(np.array(im)).to(dev).permute(2, 0, 1).float() / 255.0 for im in images]
        if allowed is None:
            found = self.model(xs)
        else:
            keep = torch.tensor([True] + [c in allowed for c in self.cfg.classes], device=dev)   # 0 = background
            found = guided_forward(self.model, xs, keep)
        return [{k: v.cpu() for k, v in d.items()} for d in found]          # the boxes are read on the CPU

    def best_box(self, image: Image.Image, allowed: set[str] | None):
        """The allowed detection (x0, y0, x1, y1) of best score * relative area ** area_weight, or None.

        Only detections above score_threshold count. The area term prefers the main
        garment to a shoe or a bag: on validation photos with a product pasted in, the
        chosen box found the product 88 % of the time against 46 % by score alone, and
        on the street photos it hit a labelled garment as often (models/RESULTS.md).
        """
        return pick_box(self.detect([image], allowed)[0], image.size,
                        self.cfg.score_threshold, self.cfg.area_weight)

    def appearance_box(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """Where the code and colour of a detected ROI are read: the box inset by `appearance_inset`.

        A detection takes in background around the garment, and the appearance code is
        sensitive to it: read in the inner 80 % it found the product first 0.80 of the
        time on validation against 0.69 in the whole box. The attributes are still read
        in the whole box; on real street photos the inner part cost them the garment's
        outline (models/RESULTS.md).
        """
        return inset_box(box, self.cfg.appearance_inset)

    def boxes(self, image: Image.Image, allowed: set[str] | None, top: int, min_side: int = 8) -> list[tuple]:
        """Up to `top` allowed detections, most confident first, however low their score."""
        det = self.detect([image], allowed)[0]
        out = []
        for b in det["boxes"].tolist():
            x0, y0, x1, y1 = (int(round(v)) for v in b)
            if x1 - x0 >= min_side and y1 - y0 >= min_side:
                out.append((x0, y0, x1, y1))
            if len(out) == top:
                break
        return out


def save_detector(path: Path, model: FasterRCNN, cfg: DetectorConfig, history: list) -> None:
    torch.save({"config": asdict(cfg), "history": history,
                "state": {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}}, path)


def load_detector(path: Path, mapping_file: Path = MAPPING_FILE) -> Detector:
    ck = read_weights(path, "detector", ("config", "state"))
    cfg = DetectorConfig(**{**ck["config"], "classes": tuple(ck["config"]["classes"])})
    model = build_detector(cfg, pretrained=False)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck["state"].items()})
    return Detector(model, cfg, json.loads(Path(mapping_file).read_text()))
