"""A learnt projection so a product photographed anew lands next to its catalog photo.

PCA + ITQ on pooled ImageNet features keeps what varies most across the catalog,
which is not what tells one product from its near twins once it is cropped,
rotated, recoloured and pasted in a street photo: only 64 % of such user-boxed
queries found their product first (models/RESULTS.md). Here a linear map W
(features -> 512) is trained on the training split with two terms:

- instance InfoNCE: a hard view of an item (the same corruption as the instance
  evaluation, on other backgrounds) against the clean photos in the batch, its own
  photo being the positive;
- a small supervised-contrastive term on the clean photos (same articleType and
  gender are positives), weight `category_weight`, which keeps the neighbourhoods
  category-level search relies on.

W is linear, so it folds into the code book: the shipped artefact stays a mean, a
projection (D x B) and medians, and nothing at query time changes.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .data import decode_image
from .features import CodeBook, FeatureExtractor
from .instance_eval import make_hard

TEMPERATURE = 0.05
CATEGORY_TEMPERATURE = 0.1


@torch.no_grad()
def hard_view_features(products, indices, extractor: FeatureExtractor, backgrounds, reps: int, seed: int,
                       batch: int = 64, log=print) -> tuple[np.ndarray, np.ndarray]:
    """Features of `reps` hard views of each product in `indices`, cropped at the pasted box."""
    rng = np.random.default_rng(seed)
    size = extractor.cfg.image_size
    feats, src, pending = [], [], []
    for r in range(reps):
        for n, i in enumerate(indices):
            bg = decode_image(backgrounds[int(rng.integers(len(backgrounds)))])
            img, (x, y, w, h) = make_hard(decode_image(products[i].image), bg, rng)
            pending.append(np.asarray(img.crop((x, y, x + w, y + h)).resize((size, size), Image.BILINEAR)))
            src.append(int(i))
            if len(pending) == batch:
                feats.append(extractor(torch.from_numpy(np.stack(pending))).numpy())
                pending = []
            if n % 2000 == 0:
                log(f"  hard views: pass {r + 1}/{reps}, {n}/{len(indices)}")
    if pending:
        feats.append(extractor(torch.from_numpy(np.stack(pending))).numpy())
    return np.concatenate(feats), np.array(src, np.int64)


def _category_loss(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al.) over one batch of embeddings."""
    logits = z @ z.T / CATEGORY_TEMPERATURE
    eye = torch.eye(len(z), dtype=torch.bool)
    logits = logits.masked_fill(eye, -1e9)
    logp = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    has = pos.any(dim=1)
    return -((logp * pos).sum(dim=1)[has] / pos.sum(dim=1)[has]).mean()


def train_projection(clean: np.ndarray, train_idx: np.ndarray, views: np.ndarray, view_src: np.ndarray,
                     labels: np.ndarray, out_dim: int = 512, epochs: int = 20, category_weight: float = 0.03,
                     batch: int = 512, lr: float = 1e-3, seed: int = 0, log=print) -> np.ndarray:
    """W (D x out_dim), started from the top principal directions of the clean training photos."""
    torch.manual_seed(seed)
    mu = clean[train_idx].mean(axis=0)
    c = torch.tensor(clean - mu, dtype=torch.float32)
    x = torch.tensor(views - mu, dtype=torch.float32)
    s = torch.tensor(view_src)
    lab = torch.tensor(np.unique(labels, return_inverse=True)[1])
    train_t = torch.tensor(train_idx)
    w = torch.nn.Parameter(torch.linalg.svd(c[train_t], full_matrices=False)[2][:out_dim].T.contiguous())
    opt = torch.optim.Adam([w], lr=lr)
    for epoch in range(epochs):
        perm = torch.randperm(len(x))
        total = 0.0
        for b in range(0, len(x), batch):
            idx = perm[b: b + batch]
            anchors = F.normalize(x[idx] @ w, dim=1)
            items, target = torch.unique(s[idx], return_inverse=True)
            photos = F.normalize(c[items] @ w, dim=1)
            loss = F.cross_entropy(anchors @ photos.T / TEMPERATURE, target)
            if category_weight:
                pick = train_t[torch.randint(len(train_t), (batch,))]
                loss = loss + category_weight * _category_loss(F.normalize(c[pick] @ w, dim=1), lab[pick])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        log(f"  projection epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}")
    return w.detach().numpy().astype(np.float64)


def folded_codebook(clean: np.ndarray, train_idx: np.ndarray, w: np.ndarray, bits: int) -> CodeBook:
    """PCA + ITQ on the projected photos, composed with W into one code book over raw features."""
    inner = CodeBook.fit(clean[train_idx] @ w, bits)
    # (f @ W - m) @ P - med  ==  (f - mu) @ (W @ P) - med, since m = mu @ W
    return CodeBook(mean=clean[train_idx].mean(axis=0).astype(np.float32),
                    projection=(w @ inner.projection).astype(np.float32), median=inner.median)
