"""What `fashion-search eval text|attributes` runs: any catalog folder, or a split of the shared data."""
from __future__ import annotations

from pathlib import Path

import torch

from shards.errors import InvalidInput

from .attributes import AttributeModel, normalise
from .data import ASSETS, image_array, load_catalog, load_splits, products_dir, usable_products
from .evaluate import evaluate_attributes
from .text_pipeline import label, load_text, read_titles
from .train_attributes import encode_products
from .weights import read_weights

ATTRIBUTE_WEIGHTS = ASSETS / "attributes.pt"


def _products(data, split):
    if split and data:
        raise InvalidInput("--split selects from the shared data; give --data or --split, not both")
    products = load_catalog(data)
    if split:
        ids = load_splits()[split]
        products = [p for p in products if p.id in ids]
    return products


def eval_text(data=None, split=None, weights=None) -> dict:
    products = _products(data, split)
    model = load_text(Path(weights) if weights else None)
    pred = model.predict([p.title or "untitled" for p in products])
    acc = sum(r["category"] == label(p, model.classes) for r, p in zip(pred, products)) / len(products)
    unknown = sum(r["category"] == "unknown" for r in pred) / len(products)
    return {"images": len(products), "accuracy": acc, "unknown_rate": unknown,
            "data": str(data or products_dir()), "split": split}


def load_attributes(weights=None) -> AttributeModel:
    ck = read_weights(weights or ATTRIBUTE_WEIGHTS, "attribute model", ("config", "taxonomy", "state"),
                      weights_only=False)
    return AttributeModel.from_checkpoint(ck)


@torch.no_grad()   # not set_grad_enabled(False), which would outlive the call in the caller's process
def eval_attributes(data=None, split=None, weights=None, beam: int = 3, limit: int | None = None,
                    guided: bool = True, device: str = "cpu", title_words: int | None = None) -> dict:
    """`guided`: also read each photo guided by the category its title gives (the text model).
    `title_words`: each title cut to its first N words first, as a shop's short titles are
    ("Nike", "Levis 501"), to see how the guided readings hold up."""
    products = _products(data, split)
    products, skipped = usable_products(products[:limit] if limit else products)   # decodes each photo once more
    model = load_attributes(weights).to(device)
    size, kind = model.cfg.encoder.image_size, model.cfg.encoder.kind
    x = normalise(torch.from_numpy(image_array(products, size)).to(device), kind)
    seqs, _, true_sets = encode_products(products, model.taxonomy)
    cats = stated = beliefs = None
    if guided:
        titles = [" ".join(p.title.split()[:title_words]) if title_words else p.title for p in products]
        read = read_titles(load_text(), model.taxonomy, titles)   # a blank one states nothing
        cats, stated, beliefs = [r.category for r in read], [r.stated for r in read], [r.belief for r in read]
    out = evaluate_attributes(model, x, seqs.to(device), true_sets, categories=cats, beam=beam, stated=stated,
                              beliefs=beliefs)
    out.update({"data": str(data or products_dir()), "split": split, "encoder": kind, "beam": beam, **skipped,
                **({"title_words": title_words} if title_words else {})})
    return out
