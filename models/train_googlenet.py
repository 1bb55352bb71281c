"""GoogLeNet trained on the catalog, for the paper's appearance features (section 3.5).

The paper pools an ImageNet GoogLeNet's inception4 and inception5 activations. This
machine has no ImageNet weights for it (no hub), so the trunk learns from the catalog
itself: torchvision's `googlenet` from scratch, one softmax head per attribute field
(articleType, gender, baseColour, ...) on its pooled inception5b output, trained on the
training split's photos with random crops and flips. `fashion-search train features
--backbone googlenet --trunk FILE` then fits the code book on its features, as it does for
EfficientNet-Lite0 (models/RESULTS.md compares the two).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .attributes import normalise
from .taxonomy import FIELDS
from .train_attributes import load_images, plot_curves, previous_run, random_crops, split_products

IGNORE = -100       # a product without a value for a field does not train that field's head


@dataclass(frozen=True)
class GoogLeNetTrainConfig:
    image_size: int = 128
    epochs: int = 12
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    crop: float = 0.7           # least side of the random square crop
    seed: int = 0


def field_labels(products, vocab: dict[str, list[str]] | None = None):
    """Per field, each product's value index (IGNORE where absent or unseen); vocab from these products
    unless given."""
    if vocab is None:     # a field no product has gets no head
        vocab = {f: vals for f in FIELDS if (vals := sorted({p.fields[f] for p in products if p.fields.get(f)}))}
    index = {f: {v: i for i, v in enumerate(vals)} for f, vals in vocab.items()}
    labels = {f: torch.tensor([index[f].get(p.fields.get(f, ""), IGNORE) for p in products]) for f in vocab}
    return vocab, labels


class CatalogGoogLeNet(nn.Module):
    """torchvision's GoogLeNet without its ImageNet classifier, and a head per field."""

    def __init__(self, vocab: dict[str, list[str]]):
        super().__init__()
        from torchvision.models import googlenet
        self.trunk = googlenet(weights=None, aux_logits=False, init_weights=True)
        self.trunk.fc = nn.Identity()                                  # -> N x 1024, after dropout
        self.heads = nn.ModuleDict({f: nn.Linear(1024, len(vals)) for f, vals in vocab.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.trunk(x)
        return {f: head(pooled) for f, head in self.heads.items()}


def _loss(logits: dict, labels: dict, idx) -> torch.Tensor:
    return sum(nn.functional.cross_entropy(logits[f], labels[f][idx], ignore_index=IGNORE) for f in logits)


@torch.no_grad()
def _evaluate(model: CatalogGoogLeNet, x: torch.Tensor, labels: dict) -> dict:
    model.eval()
    outs = [model(normalise(x[j: j + 128], "imagenet")) for j in range(0, len(x), 128)]
    logits = {f: torch.cat([o[f] for o in outs]) for f in model.heads}
    idx = torch.arange(len(x))
    acc = {}
    for f, lg in logits.items():
        known = labels[f] != IGNORE
        acc[f] = float((lg.argmax(1)[known] == labels[f][known]).float().mean()) if known.any() else float("nan")
    return {"val_nll": float(_loss(logits, labels, idx)) / len(logits), "val_accuracy": acc}


def train_googlenet(out_dir: Path, cfg: GoogLeNetTrainConfig = GoogLeNetTrainConfig(), limit: int | None = None,
                    log=print) -> dict:
    """Train; OUT/last.pt holds the trunk, heads, vocabulary, config and history (resumed from if present)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    train_p, val_p = split_products("train"), split_products("val")
    if limit:
        train_p, val_p = train_p[:limit], val_p[: max(limit // 8, 16)]
    vocab, train_y = field_labels(train_p)
    _, val_y = field_labels(val_p, vocab)
    ck_path = out_dir / "last.pt"
    previous = previous_run(ck_path, config=asdict(cfg), vocab=vocab)
    train_x = load_images(train_p, cfg.image_size, f"train{limit or ''}")
    val_x = load_images(val_p, cfg.image_size, f"val{limit or ''}")
    model = CatalogGoogLeNet(vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = math.ceil(len(train_p) / cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.15)
    history, start = [], 0
    if previous is not None:
        model.load_state_dict(previous["state"])
        opt.load_state_dict(previous["optimizer"])
        sched.load_state_dict(previous["scheduler"])
        history, start = previous["history"], previous["epoch"]
        log(f"resumed from {ck_path} at epoch {start}")
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(start, cfg.epochs):
        model.train()
        perm = torch.randperm(len(train_p), generator=torch.Generator().manual_seed(cfg.seed + epoch))
        total, count, t0 = 0.0, 0, time.time()
        bar = tqdm(range(0, len(perm), cfg.batch), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not os.isatty(2))
        for i in bar:
            idx = perm[i: i + cfg.batch]
            x = random_crops(train_x[idx], cfg.crop, gen)
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip] = x[flip].flip(2)
            loss = _loss(model(normalise(x, "imagenet")), train_y, idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) / len(model.heads) * len(idx)
            count += len(idx)
            bar.set_postfix(nll=f"{total / count:.3f}")
        history.append({"epoch": epoch + 1, "train_nll": total / count, **_evaluate(model, val_x, val_y),
                        "seconds": time.time() - t0})
        log(json.dumps(history[-1]))
        torch.save({"kind": "catalog_googlenet", "config": asdict(cfg), "vocab": vocab, "state": model.state_dict(),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": history,
                    "epoch": epoch + 1}, ck_path)
        plot_curves(history, out_dir / "curves.png", "GoogLeNet on the catalog (one head per field)",
                    ylabel="cross-entropy per field")
    return {"history": history, "checkpoint": str(ck_path)}


def trunk_state(path) -> dict[str, torch.Tensor]:
    """The GoogLeNet trunk's weights from a `train_googlenet` checkpoint (heads and optimizer left out)."""
    from .weights import read_weights
    ck = read_weights(path, "catalog GoogLeNet", ("state", "vocab"), weights_only=False)
    return {k[len("trunk."):]: v for k, v in ck["state"].items() if k.startswith("trunk.")}

