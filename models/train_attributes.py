"""Training the attribute model: fixed seed, progress bar, checkpoints that carry their
config, resume, and a PNG of the training and validation curves."""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .attributes import AttributeConfig, AttributeModel, normalise
from .data import PROJECT, Product, image_array, load_catalog, load_splits
from .taxonomy import FILE as TAXONOMY_FILE
from .taxonomy import PAD, Taxonomy

CACHE = Path(os.environ.get("FASHION_CACHE", PROJECT / ".cache"))


def encode_products(products: list[Product], tax: Taxonomy, max_len: int = 10):
    seqs = torch.full((len(products), max_len), PAD, dtype=torch.long)
    br = torch.zeros((len(products), len(tax.tokens)))
    sets = []
    for i, p in enumerate(products):
        toks = tax.sequence(p.fields)
        ids = tax.encode(toks)[:max_len]
        seqs[i, : len(ids)] = torch.tensor(ids)
        br[i, ids[1:-1]] = 1.0
        sets.append(set(toks))
    return seqs, br, sets


def split_products(split: str) -> list[Product]:
    cat = load_catalog()
    ids = load_splits()[split]
    return [p for p in cat if p.id in ids]


def load_images(products: list[Product], size: int, name: str) -> torch.Tensor:
    arr = image_array(products, size, CACHE / f"{name}-{size}.npy")
    return torch.from_numpy(arr)


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [h["epoch"] for h in history]
    ax.plot(steps, [h["train_nll"] for h in history], label="train NLL")
    ax.plot(steps, [h["val_nll"] for h in history], label="validation NLL")
    ax.set_xlabel("epoch")
    ax.set_ylabel("NLL per token")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train_attributes(cfg: AttributeConfig, out_dir: Path, epochs: int = 6, batch: int = 64, lr: float = 2e-3,
                     seed: int = 0, limit: int | None = None, log=print) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    np.random.seed(seed)
    train_p, val_p = split_products("train"), split_products("val")
    if limit:
        train_p, val_p = train_p[:limit], val_p[: max(limit // 8, 16)]
    tax = Taxonomy.load(TAXONOMY_FILE) if TAXONOMY_FILE.exists() else Taxonomy.build(train_p)
    size, kind = cfg.encoder.image_size, cfg.encoder.kind
    train_x = load_images(train_p, size, f"train{limit or ''}")
    val_x = normalise(load_images(val_p, size, f"val{limit or ''}"), kind)
    train_seq, train_br, _ = encode_products(train_p, tax)
    val_seq, val_br, _ = encode_products(val_p, tax)

    model = AttributeModel(cfg, tax)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(train_p) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.15)
    ck_path = out_dir / "last.pt"
    history, start = [], 0
    if ck_path.exists():  # resume
        ck = torch.load(ck_path, map_location="cpu", weights_only=False)
        if ck["config"] == asdict(cfg):
            model.load_state_dict(ck["state"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            history, start = ck["history"], ck["epoch"]
            log(f"resumed from {ck_path} at epoch {start}")
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(start, epochs):
        model.train()
        perm = torch.randperm(len(train_p), generator=torch.Generator().manual_seed(seed + epoch))
        total, count, t0 = 0.0, 0, time.time()
        bar = tqdm(range(0, len(perm), batch), desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                   disable=not os.isatty(2))
        for i in bar:
            idx = perm[i: i + batch]
            x = train_x[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip] = x[flip].flip(2)                              # horizontal flip (N x S x S x 3)
            _, losses = model(normalise(x, kind), train_seq[idx], train_br[idx])
            opt.zero_grad()
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            total += float(losses["nll"].detach()) * len(idx)
            count += len(idx)
            bar.set_postfix(nll=f"{total / count:.3f}")
        model.eval()
        with torch.no_grad():
            val_nll = float(np.mean([float(model(val_x[j: j + 128], val_seq[j: j + 128], val_br[j: j + 128])[1]["nll"])
                                     for j in range(0, len(val_x), 128)]))
        history.append({"epoch": epoch + 1, "train_nll": total / count, "val_nll": val_nll,
                        "seconds": time.time() - t0})
        log(json.dumps(history[-1]))
        torch.save({**model.checkpoint(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "history": history, "epoch": epoch + 1}, ck_path)
        plot_curves(history, out_dir / "curves.png", f"{kind} attributes")
    return {"history": history, "checkpoint": str(ck_path)}


def export_weights(ck_path: Path, out: Path) -> None:
    """A shipped checkpoint: config, taxonomy and half-precision weights, no optimizer."""
    ck = torch.load(ck_path, map_location="cpu", weights_only=False)
    torch.save({"config": ck["config"], "taxonomy": ck["taxonomy"], "history": ck["history"],
                "state": {k: (v.half() if v.is_floating_point() else v) for k, v in ck["state"].items()}}, out)
