"""Measures of recognition (the paper's Table 2): per-image precision and recall of the
predicted attribute set against the labelled one, averaged over images."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .taxonomy import PAD


def set_scores(pred: list[set], true: list[set], category_field: str | None = None) -> dict:
    """Per-image precision, recall and exact match, averaged; with `category_field`, also how often
    the image's category tokens are exactly its labelled ones (`category_accuracy`)."""
    p = [len(a & b) / len(a) if a else 0.0 for a, b in zip(pred, true)]
    r = [len(a & b) / len(b) if b else 1.0 for a, b in zip(pred, true)]
    e = [a == b for a, b in zip(pred, true)]
    out = {"precision": float(np.mean(p)), "recall": float(np.mean(r)), "exact_match": float(np.mean(e))}
    if category_field is not None:
        def cat(s):
            return {t for t in s if t.startswith(category_field + "=")}
        out["category_accuracy"] = float(np.mean([cat(a) == cat(b) for a, b in zip(pred, true)]))
    return out


@torch.no_grad()
def evaluate_attributes(model, images: torch.Tensor, seqs: torch.Tensor, true_sets: list[set],
                        categories: list[str | None] | None = None, beam: int = 3, batch: int = 64,
                        stated: list[dict | None] | None = None, beliefs: list[dict | None] | None = None) -> dict:
    """images: N x 3 x S x S normalised; seqs: N x L token ids; categories: guidance per image;
    stated, beliefs: what each title states besides (gender, colour) and its belief over the categories,
    read as a catalog item is (`title_guided_*`: the category from the belief and the photo together)."""
    model.eval()
    preds, guided, titled, base = [], [], [], []
    nll_sum, nll_n = 0.0, 0
    for i in range(0, len(images), batch):
        x = images[i: i + batch]
        logits, _ = model(x, seqs[i: i + batch])
        tgt = seqs[i: i + batch, 1:]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=PAD,
                              reduction="sum")
        nll_sum += float(nll)
        nll_n += int((tgt != PAD).sum())
        preds += [{t for t, _ in seq} for seq in model.generate(x, beam=beam)]
        if categories is not None:
            preds_g = model.generate(x, beam=beam, categories=categories[i: i + batch])
            guided += [{t for t, _ in seq} for seq in preds_g]
        if stated is not None:
            preds_t = model.generate(x, beam=beam, categories=categories[i: i + batch], stated=stated[i: i + batch],
                                     beliefs=beliefs[i: i + batch] if beliefs is not None else None)
            titled += [{t for t, _ in seq} for seq in preds_t]
        base += [{t for t, _ in row} for row in model.predict_binary(x)]
    out = {"images": len(images), **set_scores(preds, true_sets, model.taxonomy.category_field),
           "nll": nll_sum / max(nll_n, 1)}
    if categories is not None:
        g = set_scores(guided, true_sets)
        out.update({f"guided_{k}": v for k, v in g.items()})
    if stated is not None:
        out.update({f"title_guided_{k}": v for k, v in
                    set_scores(titled, true_sets, model.taxonomy.category_field).items()})
    b = set_scores(base, true_sets)
    out.update({f"baseline_{k}": v for k, v in b.items()})
    return out
