"""Training and measuring the guided ROI detector on COCO-format street photos (ccp-boxes).

mAP (the paper's Table 3) at IoU 0.5..0.9, VOC-style all-point AP per class,
averaged over the classes that have ground truth in the evaluated images.
Non-guided: every detection. Guided (the issue's definition): in each image, only the
detections of classes that the guidance of a category present in the image allows.
Guided softmax (what the query path does, Detector.detect with `allowed`): the box
classifier's softmax over those classes only, so a box read as a sibling class gives
its probability to an allowed one instead of being dropped. AP reads the ranked list
down to a score of 0.001 (up to 100 detections an image), as mAP protocols do; the
query path keeps its own floor (DetectorConfig.score_threshold).
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from shards.errors import InvalidInput

from .data import SHIPPED, data_root, decode_image, load_catalog, load_coco, load_splits
from .detector import MAPPING_FILE, DetectorConfig, Detector, build_detector, load_detector, save_detector

SPLIT_FILE = SHIPPED / "detector_splits.json"
IOUS = (0.5, 0.6, 0.7, 0.8, 0.9)
AP_SCORE_FLOOR, AP_DETECTIONS = 0.001, 100   # the ranked list that AP is read from


def boxes_dir() -> Path:
    return data_root() / "ccp-boxes"


def coco_split(coco: dict, seed: int = 0) -> dict:
    if SPLIT_FILE.exists():
        return json.loads(SPLIT_FILE.read_text())
    ids = sorted(im["id"] for im in coco["images"])
    random.Random(seed).shuffle(ids)
    n = len(ids)
    out = {"test": sorted(ids[: n // 10]), "val": sorted(ids[n // 10: n // 5]), "train": sorted(ids[n // 5:])}
    SPLIT_FILE.write_text(json.dumps(out))
    return out


def targets(im: dict, label_of: dict) -> dict:
    boxes, labels = [], []
    for a in im["boxes"]:
        x, y, w, h = a["bbox"]
        if w >= 2 and h >= 2 and a["category_id"] in label_of:
            boxes.append([x, y, x + w, y + h])
            labels.append(label_of[a["category_id"]])
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64)}


def pasted_products(classes: tuple[str, ...], mapping: dict[str, list[str]]) -> list[tuple]:
    """(image path, label) of the training split's catalog photos whose category maps to a detector class."""
    train_ids = load_splits()["train"]
    out = []
    for p in load_catalog():
        allowed = [c for c in mapping.get(p.fields.get("articleType"), []) if c in classes]
        if p.id in train_ids and allowed:
            out.append((p.image, classes.index(allowed[0]) + 1))
    return out


def copy_paste(street: Image.Image, street_target: dict, product: Path, label: int, rng) -> tuple:
    """A street photo with a catalog photo pasted on it (Simple Copy-Paste, Ghiasi et al. 2021).

    The street photo keeps its own boxes, scaled with it, except those the pasted
    product hides for the most part; the pasted rectangle is one more box, labelled
    with the first detector class its category maps to.
    """
    from .instance_eval import make_hard
    img, (px, py, pw, ph) = make_hard(decode_image(product), street, rng)
    boxes = street_target["boxes"] * (img.height / street.height)
    pasted = torch.tensor([[px, py, px + pw, py + ph]], dtype=torch.float32)
    if len(boxes):
        ix = (torch.minimum(boxes[:, 2], pasted[0, 2]) - torch.maximum(boxes[:, 0], pasted[0, 0])).clamp(min=0)
        iy = (torch.minimum(boxes[:, 3], pasted[0, 3]) - torch.maximum(boxes[:, 1], pasted[0, 1])).clamp(min=0)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        keep = ix * iy < 0.5 * area
        boxes, labels = boxes[keep], street_target["labels"][keep]
    else:
        labels = street_target["labels"]
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0
    return x, {"boxes": torch.cat([boxes, pasted]), "labels": torch.cat([labels, torch.tensor([label])])}


def train_detector(out: Path, epochs: int = 8, batch: int = 4, lr: float = 0.01, seed: int = 0,
                   paste: float = 0.0, init: Path | None = None, scales: tuple[int, ...] = (),
                   repeat_threshold: float = 0.0, pyramid: bool = False, log=print) -> dict:
    """Train on the street photos; with paste > 0, that fraction of each batch also gets a catalog
    photo pasted on it (so the detector learns to find a product shown in a scene); `init`
    starts from a trained detector's weights instead of ImageNet's. `scales`: short sides drawn
    at random for each training batch (torchvision's multi-scale training); the saved
    detector still reads photos at its config's min_size. `repeat_threshold` > 0: photos
    with rare classes come more often (repeat_factors). `pyramid`: the two-level trunk
    (PyramidTrunk); from a single-level `init` its trunk, RPN and box head are warm-started."""
    torch.manual_seed(seed)
    coco = load_coco(boxes_dir())
    split = coco_split(coco)
    used = sorted({a["category_id"] for im in coco["images"] for a in im["boxes"]})
    names = {c["id"]: c["name"] for c in coco["categories"]}
    classes = tuple(names[c] for c in used)
    label_of = {c: i + 1 for i, c in enumerate(used)}
    start = load_detector(Path(init)) if init is not None else None
    if start is not None and start.cfg.classes != classes:
        raise InvalidInput(f"{init} was trained on other classes")
    if start is not None and start.cfg.pyramid and not pyramid:
        raise InvalidInput(f"{init} has the pyramid trunk; pass pyramid=True (--pyramid) to fine-tune it")
    cfg = DetectorConfig(classes=classes, pyramid=pyramid)
    model = build_detector(cfg)
    if start is not None and start.cfg.pyramid == pyramid:
        model.load_state_dict(start.model.state_dict())
    elif start is not None:
        model.backbone.warm_start(start.model.backbone.state_dict())
        model.rpn.load_state_dict(start.model.rpn.state_dict())
        model.roi_heads.load_state_dict(start.model.roi_heads.state_dict())
    products = pasted_products(classes, json.loads(MAPPING_FILE.read_text())) if paste else []
    rng = np.random.default_rng(seed)
    train = [im for im in coco["images"] if im["id"] in set(split["train"])]
    streets = [decode_image(im["path"]) for im in train]
    data = [(torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float() / 255.0, targets(im, label_of))
            for img, im in zip(streets, train)]
    if scales:
        model.transform.min_size = tuple(int(v) for v in scales)
        model.transform.max_size = max(cfg.max_size, round(max(scales) * cfg.max_size / cfg.min_size))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    factors = repeat_factors([t["labels"].tolist() for _, t in data], repeat_threshold) if repeat_threshold else None
    orders = []
    for epoch in range(epochs):
        order = list(range(len(data))) if factors is None else repeated(factors, random.Random(seed + epoch))
        random.Random(seed + epoch).shuffle(order)
        orders.append(order)
    steps = sum(math.ceil(len(o) / batch) for o in orders)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    history = []
    for epoch, order in enumerate(orders):
        model.train()
        total, t0 = 0.0, time.time()
        for i in tqdm(range(0, len(order), batch), desc=f"detector {epoch + 1}/{epochs}", leave=False,
                      disable=not os.isatty(2)):
            xs, ts = [], []
            for j in order[i: i + batch]:
                x, t = data[j]
                if products and rng.random() < paste:
                    path, lab = products[int(rng.integers(len(products)))]
                    x, t = copy_paste(streets[j], t, path, lab, rng)
                if random.random() < 0.5:   # horizontal flip
                    x = x.flip(-1)
                    b = t["boxes"].clone()
                    b[:, [0, 2]] = x.shape[-1] - t["boxes"][:, [2, 0]]
                    t = {"boxes": b, "labels": t["labels"]}
                xs.append(x)
                ts.append(t)
            losses = model(xs, ts)
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(xs)
        history.append({"epoch": epoch + 1, "loss": total / len(order), "seconds": time.time() - t0})
        log(json.dumps(history[-1]))
        save_detector(out, model, cfg, history)
    return {"weights": str(out), "classes": len(classes), "history": history}


def repeat_factors(labels: list[list[int]], threshold: float) -> np.ndarray:
    """Repeat-factor sampling (LVIS, Gupta et al. 2019): a photo's factor is the largest over its
    classes of max(1, sqrt(threshold / f)), f = the fraction of photos with that class."""
    n = len(labels)
    freq: dict[int, int] = {}
    for labs in labels:
        for c in set(labs):
            freq[c] = freq.get(c, 0) + 1
    return np.array([max([1.0] + [math.sqrt(threshold / (freq[c] / n)) for c in set(labs)]) for labs in labels])


def repeated(factors: np.ndarray, rng: random.Random) -> list[int]:
    """One epoch's photos: photo i floor(r_i) times, and once more with probability frac(r_i)."""
    out = []
    for i, r in enumerate(factors.tolist()):
        out += [i] * (int(r) + (rng.random() < r - int(r)))
    return out


def average_precision(scores, matched, n_gt) -> float:
    if n_gt == 0:
        return float("nan")
    if not scores:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.asarray(matched, dtype=float)[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall, precision = ctp / n_gt, ctp / np.maximum(ctp + cfp, 1e-9)
    mrec = np.concatenate([[0], recall, [1]])
    mpre = np.concatenate([[0], precision, [0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def mean_ap(dets: list[dict], gts: list[dict], n_classes: int, thr: float) -> float:
    aps = []
    for c in range(1, n_classes + 1):
        scores, matched, n_gt = [], [], 0
        for d, g in zip(dets, gts):
            gb = g["boxes"][g["labels"] == c]
            n_gt += len(gb)
            db, ds = d["boxes"][d["labels"] == c], d["scores"][d["labels"] == c]
            used = np.zeros(len(gb), bool)
            for k in np.argsort(-ds, kind="stable"):
                scores.append(float(ds[k]))
                if len(gb):
                    ov = iou(db[k: k + 1], gb)[0]
                    ov[used] = -1
                    j = int(np.argmax(ov))
                    if ov[j] >= thr:
                        used[j] = True
                        matched.append(1)
                        continue
                matched.append(0)
        ap = average_precision(scores, matched, n_gt)
        if not math.isnan(ap):
            aps.append(ap)
    return float(np.mean(aps)) if aps else 0.0


@contextmanager
def ranked_detections(detector: Detector, floor: float = AP_SCORE_FLOOR, per_image: int = AP_DETECTIONS):
    """The detector keeps detections down to `floor` while measured (torchvision's 0.05
    cut the tail of each class's ranking: validation guided mAP@0.5 0.292 against 0.324)."""
    heads = detector.model.roi_heads
    kept = heads.score_thresh, heads.detections_per_img
    heads.score_thresh, heads.detections_per_img = floor, per_image
    try:
        yield detector
    finally:
        heads.score_thresh, heads.detections_per_img = kept


def evaluate_detector(detector: Detector, folder: Path | None = None, split: str | None = None) -> dict:
    coco = load_coco(folder or boxes_dir())
    images = coco["images"]
    if split:
        ids = set(coco_split(coco)[split])
        images = [im for im in images if im["id"] in ids]
    names = {c["id"]: c["name"] for c in coco["categories"]}
    classes = detector.cfg.classes
    label_of = {cid: classes.index(n) + 1 for cid, n in names.items() if n in classes}
    mapping = detector.mapping
    reach = {c: set().union(*[set(v) for v in mapping.values() if c in v]) | {c} for c in classes}
    dets, guided, softmax, gts = [], [], [], []
    unreadable, unknown, small = [], Counter(), 0     # what the figures leave out, said in the report
    for im in images:
        try:
            img = decode_image(im["path"])
        except InvalidInput:
            unreadable.append(im["file_name"])
            continue
        for a in im["boxes"]:
            if a["category_id"] not in label_of:
                unknown[names.get(a["category_id"], f"category id {a['category_id']}")] += 1
            elif min(a["bbox"][2:]) < 2:
                small += 1
        t = targets(im, label_of)
        g = {"boxes": t["boxes"].numpy(), "labels": t["labels"].numpy()}
        present = {classes[int(lab) - 1] for lab in g["labels"]}
        allowed = set().union(*[reach[c] for c in present]) if present else set()
        with ranked_detections(detector):
            d = {k: v.numpy() for k, v in detector.detect([img])[0].items()}
            softmax.append({k: v.numpy() for k, v in detector.detect([img], allowed)[0].items()})
        keep = np.array([classes[int(lab) - 1] in allowed for lab in d["labels"]], bool)
        dets.append(d)
        guided.append({k: v[keep] if len(keep) else v for k, v in d.items()})
        gts.append(g)
    if not gts:
        raise InvalidInput(f"none of the {len(images)} images could be read")
    return {"images": len(gts), "unreadable_images": len(unreadable), "unreadable_files": unreadable[:20],
            "boxes": int(sum(len(g["labels"]) for g in gts)),
            # boxes of classes the detector does not know (by name), and boxes under 2 px: not counted
            "boxes_of_unknown_classes": dict(unknown.most_common()), "boxes_too_small": small,
            "map": {str(t): mean_ap(dets, gts, len(classes), t) for t in IOUS},
            "guided_map": {str(t): mean_ap(guided, gts, len(classes), t) for t in IOUS},
            "guided_softmax_map": {str(t): mean_ap(softmax, gts, len(classes), t) for t in IOUS},
            "classes": len(classes), "split": split, "ap_score_floor": AP_SCORE_FLOOR, "ap_detections": AP_DETECTIONS}
