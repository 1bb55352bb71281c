"""Training the attribute model: fixed seed, progress bar, checkpoints that carry their
config, resume, and a PNG of the training and validation curves.

`hard` > 0 replaces that fraction of each batch by hard views of the same products:
the instance evaluation's corruption (crop, rotation, colour jitter, paste on a street
photo, JPEG) cropped at the pasted box with each side moved by up to 10 %, as the
detector's ROI would be. A query is read in such a crop, and a model that saw only
clean studio photos reads its category wrongly and confidently, which then excludes
the product (models/RESULTS.md). The backgrounds are ccp-boxes street photos, never
the ccp-tags ones the evaluation pastes on. `init` fine-tunes trained weights.
`crop` > 0 zooms each training image into a random square of at least that fraction
of its side, anywhere in it (off by default, as the shipped weights were trained).
`average` (stochastic weight averaging, Izmailov et al. 2018): the learning rate stays at
`lr`, the weights are taken every half epoch, and the run's model is their mean, its batch
norms re-estimated on training batches (`average.pt`). The shipped weights fine-tuned so
read validation photos 0.003 better, inside the noise, and hard views worse: not adopted
(models/RESULTS.md)."""
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

from shards.errors import InvalidInput

from .attributes import AttributeConfig, AttributeModel, normalise
from .data import PROJECT, Product, data_root, decode_image, image_array, load_catalog, load_splits
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


def _hard_view(args) -> np.ndarray:
    """One hard view of one product, cropped at its jittered paste box; its own generator, so
    the views are the same however many processes make them."""
    from PIL import Image

    from .instance_eval import make_hard
    image, backgrounds, size, seed = args
    rng = np.random.default_rng(seed)
    bg = decode_image(backgrounds[int(rng.integers(len(backgrounds)))])
    img, (x, y, w, h) = make_hard(decode_image(image), bg, rng)
    dx0, dy0, dx1, dy1 = rng.uniform(-0.1, 0.1, 4) * (w, h, w, h)
    box = (max(0, round(x + dx0)), max(0, round(y + dy0)),
           min(img.width, round(x + w + dx1)), min(img.height, round(y + h + dy1)))
    return np.asarray(img.crop(box).resize((size, size), Image.BILINEAR))


def hard_views(products: list[Product], size: int, reps: int, name: str, seed: int = 11,
               workers: int = 1, log=print) -> np.ndarray:
    """(reps, n, size, size, 3) uint8: `reps` hard views of each product, cropped at a jittered paste box
    (cached). View r of product i draws from a generator seeded (seed, r, i); `workers` processes make them."""
    cache = CACHE / f"{name}-hard{reps}-{size}-{seed}.npy"
    if cache.exists():
        arr = np.load(cache)
        if arr.shape[:2] == (reps, len(products)):
            return arr
    backgrounds = sorted((data_root() / "ccp-boxes" / "images").glob("*.jpg"))
    if not backgrounds:
        raise FileNotFoundError(f"no street photos for backgrounds under {data_root() / 'ccp-boxes' / 'images'}")
    jobs = [(p.image, backgrounds, size, (seed, r, i)) for r in range(reps) for i, p in enumerate(products)]
    arr, n, t0 = np.zeros((reps, len(products), size, size, 3), np.uint8), len(products), time.time()
    if workers > 1:
        from multiprocessing import get_context
        with get_context("spawn").Pool(workers) as pool:
            for k, view in enumerate(pool.imap(_hard_view, jobs, chunksize=64)):
                arr[k // n, k % n] = view
    else:
        for k, job in enumerate(jobs):
            arr[k // n, k % n] = _hard_view(job)
    log(f"  hard views of {name}: {len(jobs)} in {time.time() - t0:.0f} s")
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, arr)
    return arr


def random_crops(x: torch.Tensor, min_side: float, gen: torch.Generator) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> the same shape, each image zoomed into a random square of side
    in [min_side, 1] of its own, placed anywhere inside it (bilinear)."""
    n = len(x)
    side = min_side + (1 - min_side) * torch.rand(n, generator=gen)
    shift = (1 - side)[:, None] * (2 * torch.rand(n, 2, generator=gen) - 1)   # the square stays inside
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = side
    theta[:, :, 2] = shift
    img = x.permute(0, 3, 1, 2).float()
    grid = torch.nn.functional.affine_grid(theta, list(img.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(img, grid, mode="bilinear", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def previous_run(ck_path: Path, **expected) -> dict | None:
    """The checkpoint an earlier run left in this folder, to resume from; one whose stored `expected`
    entries (config, ...) differ is another run's, refused rather than overwritten."""
    if not ck_path.exists():
        return None
    ck = torch.load(ck_path, map_location="cpu", weights_only=False)
    if any(ck.get(k) != v for k, v in expected.items()):
        raise InvalidInput(f"{ck_path} is another run (its config {ck.get('config')}); resume it with the same "
                           f"settings, or pick another --out")
    return ck


def plot_curves(history: list[dict], path: Path, title: str, ylabel: str = "NLL per token") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [h["epoch"] for h in history]
    ax.plot(steps, [h["train_nll"] for h in history], label="train NLL")
    ax.plot(steps, [h["val_nll"] for h in history], label="validation NLL")
    if all("val_hard_nll" in h for h in history):
        ax.plot(steps, [h["val_hard_nll"] for h in history], label="validation NLL, hard views")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train_attributes(cfg: AttributeConfig, out_dir: Path, epochs: int = 6, batch: int = 64, lr: float = 2e-3,
                     seed: int = 0, limit: int | None = None, hard: float = 0.0, hard_reps: int = 2,
                     init: Path | None = None, crop: float = 0.0, device: str = "cpu", workers: int = 1,
                     average: bool = False, log=print) -> dict:
    if not 0.0 <= hard <= 1.0:
        raise ValueError(f"hard must be a fraction in [0, 1], got {hard}")
    if not (crop == 0.0 or 0.0 < crop < 1.0):
        raise ValueError(f"crop is the least side of a random crop in (0, 1), or 0 for none; got {crop}")
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    np.random.seed(seed)
    train_p, val_p = split_products("train"), split_products("val")
    if limit:
        train_p, val_p = train_p[:limit], val_p[: max(limit // 8, 16)]
    if init is not None:      # fine-tune: the weights' own config and taxonomy
        model = AttributeModel.from_checkpoint(torch.load(init, map_location="cpu", weights_only=False)).train()
        cfg, tax = model.cfg, model.taxonomy
    else:
        tax = Taxonomy.load(TAXONOMY_FILE) if TAXONOMY_FILE.exists() else Taxonomy.build(train_p)
        model = AttributeModel(cfg, tax)
    ck_path = out_dir / "last.pt"
    previous = previous_run(ck_path, config=asdict(cfg))
    model.to(device)
    size, kind = cfg.encoder.image_size, cfg.encoder.kind
    train_x = load_images(train_p, size, f"train{limit or ''}")
    val_x = normalise(load_images(val_p, size, f"val{limit or ''}"), kind)
    train_seq, train_br, _ = encode_products(train_p, tax)
    val_seq, val_br, _ = encode_products(val_p, tax)
    if hard:
        train_views = torch.from_numpy(hard_views(train_p, size, hard_reps, f"train{limit or ''}",
                                                  workers=workers, log=log))
        val_hard = normalise(torch.from_numpy(hard_views(val_p, size, 1, f"val{limit or ''}", seed=12,
                                                         workers=workers, log=log)[0]), kind)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(train_p) / batch)
    if average:      # a constant rate: the weights wander around a wide minimum, and their mean sits in it
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    else:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                    pct_start=0.15)
    history, start, mean = [], 0, WeightMean()
    if previous is not None:  # resume
        model.load_state_dict(previous["state"])
        opt.load_state_dict(previous["optimizer"])
        sched.load_state_dict(previous["scheduler"])
        history, start = previous["history"], previous["epoch"]
        mean = WeightMean.from_state(previous.get("average"))
        log(f"resumed from {ck_path} at epoch {start}")
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(start, epochs):
        model.train()
        perm = torch.randperm(len(train_p), generator=torch.Generator().manual_seed(seed + epoch))
        total, count, t0 = 0.0, 0, time.time()
        starts = range(0, len(perm), batch)
        takes = {len(starts) // 2 - 1, len(starts) - 1}                # every half epoch
        bar = tqdm(starts, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not os.isatty(2))
        for j, i in enumerate(bar):
            idx = perm[i: i + batch]
            x = train_x[idx]                                       # a copy: changing it is safe
            if hard:
                use = (torch.rand(len(idx), generator=gen) < hard).nonzero().flatten()
                rep = torch.randint(train_views.shape[0], (len(use),), generator=gen)
                x[use] = train_views[rep, idx[use]]
            if crop:
                x = random_crops(x, crop, gen)
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip] = x[flip].flip(2)                              # horizontal flip (N x S x S x 3)
            _, losses = model(normalise(x.to(device, non_blocking=True), kind), train_seq[idx].to(device),
                              train_br[idx].to(device))
            opt.zero_grad()
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            total += float(losses["nll"].detach()) * len(idx)
            count += len(idx)
            if average and j in takes:
                mean.add(model.state_dict())
            bar.set_postfix(nll=f"{total / count:.3f}")
        model.eval()
        history.append({"epoch": epoch + 1, "train_nll": total / count, "val_nll": _nll(model, val_x, val_seq, val_br),
                        "seconds": time.time() - t0})
        if hard:
            history[-1]["val_hard_nll"] = _nll(model, val_hard, val_seq, val_br)
        log(json.dumps(history[-1]))
        ck = model.checkpoint()
        ck["state"] = {k: v.cpu() for k, v in ck["state"].items()}     # readable where there is no GPU
        torch.save({**ck, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "history": history, "epoch": epoch + 1, "average": mean.state()}, ck_path)
        plot_curves(history, out_dir / "curves.png", f"{kind} attributes")
    if not average:
        return {"history": history, "checkpoint": str(ck_path)}
    model.load_state_dict(mean.value())
    model.train()
    views = train_views if hard else None
    reestimate_batch_norms(model.encoder, _training_batches(train_x, views, hard, batch, kind, device, seed))
    model.eval()
    averaged = {"averaged_weights": mean.count, "val_nll": _nll(model, val_x, val_seq, val_br)}
    if hard:
        averaged["val_hard_nll"] = _nll(model, val_hard, val_seq, val_br)
    log(json.dumps(averaged))
    ck = model.checkpoint()
    ck["state"] = {k: v.cpu() for k, v in ck["state"].items()}
    torch.save({**ck, "history": history, "average": averaged}, out_dir / "average.pt")
    return {"history": history, "average": averaged, "checkpoint": str(out_dir / "average.pt")}


class WeightMean:
    """The running mean of a model's weights (floating-point tensors; the rest as last taken)."""

    def __init__(self, count: int = 0, mean: dict | None = None):
        self.count, self.mean = count, mean or {}

    @classmethod
    def from_state(cls, state: dict | None) -> "WeightMean":
        return cls(state["count"], state["mean"]) if state else cls()

    def add(self, weights: dict) -> None:
        self.count += 1
        for k, v in weights.items():
            v = v.detach().to("cpu", copy=True)
            if k not in self.mean or not v.is_floating_point():
                self.mean[k] = v.float() if v.is_floating_point() else v
            else:
                self.mean[k] += (v.float() - self.mean[k]) / self.count

    def value(self) -> dict:
        return {k: v.clone() for k, v in self.mean.items()}

    def state(self) -> dict:
        return {"count": self.count, "mean": self.mean}


@torch.no_grad()
def reestimate_batch_norms(model: torch.nn.Module, batches) -> int:
    """The batch norms that are training (not the frozen ones) given the plain mean of their
    statistics over `batches`: an average of weights is a model no batch ever ran through, and
    the averaged running statistics do not describe its activations. Returns how many."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                     # a cumulative average over the batches
    for args in batches:
        model(*args)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return len(norms)


def _training_batches(train_x, views, hard: float, batch: int, kind: str, device: str, seed: int, n: int = 40):
    """`n` batches drawn as training draws them: a `hard` fraction replaced by hard views."""
    gen = torch.Generator().manual_seed(seed + 999)
    for _ in range(min(n, math.ceil(len(train_x) / batch))):
        idx = torch.randint(len(train_x), (min(batch, len(train_x)),), generator=gen)
        x = train_x[idx]
        if views is not None:
            use = (torch.rand(len(idx), generator=gen) < hard).nonzero().flatten()
            x[use] = views[torch.randint(views.shape[0], (len(use),), generator=gen), idx[use]]
        yield (normalise(x.to(device), kind),)


@torch.no_grad()
def _nll(model: AttributeModel, x, seqs, br) -> float:
    dev = next(model.parameters()).device
    batches = [(x[j: j + 128], seqs[j: j + 128], br[j: j + 128]) for j in range(0, len(x), 128)]
    return float(np.mean([float(model(*(t.to(dev) for t in b))[1]["nll"]) for b in batches]))


def export_weights(ck_path: Path, out: Path) -> None:
    """A shipped checkpoint: config, taxonomy and half-precision weights, no optimizer."""
    ck = torch.load(ck_path, map_location="cpu", weights_only=False)
    torch.save({"config": ck["config"], "taxonomy": ck["taxonomy"], "history": ck["history"],
                "state": {k: (v.half() if v.is_floating_point() else v) for k, v in ck["state"].items()}}, out)
