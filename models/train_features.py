"""Fitting the code book on the catalog, and the retrieval figures it is judged by.

Category-level retrieval (the paper's measure): queries are the test split, the
gallery is the rest of the catalog; relevant = same articleType and gender (and,
for the colour figure, baseColour). mAP with float features (cosine), with B-bit
codes (Hamming), and with codes plus colour; precision@4 (UKB's measure); and the
inverted index's promise: the fraction of the gallery scanned when the query's
category filters it, and mAP with and without that filter.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shards.errors import InvalidInput

from .colour import hsv_histogram
from .data import ASSETS, Product, load_catalog, load_splits, usable_products
from .features import CodeBook, FeatureConfig, FeatureExtractor, save_features
from .train_attributes import CACHE


def catalog_features(products: list[Product], ext: FeatureExtractor, name: str | None, batch: int = 64):
    from .data import image_array
    from PIL import Image
    size = ext.cfg.image_size
    imgs = image_array(products, size, CACHE / f"{name}-{size}.npy" if name else None)
    with torch.no_grad():   # not set_grad_enabled(False): that would outlive the call in the caller's process
        feats = np.concatenate([ext(torch.from_numpy(imgs[i: i + batch])).numpy()
                                for i in range(0, len(imgs), batch)])
    hists = np.stack([hsv_histogram(Image.fromarray(a)) for a in imgs])
    return feats, hists


def shared_catalog_features(products: list[Product], ext: FeatureExtractor):
    """catalog_features of the shared catalog, cached on disk by the extractor's identity (backbone,
    image size, and googlenet's trunk)."""
    cache = CACHE / f"catalog-feats-{ext.identity()}.npz"
    if cache.exists():
        z = np.load(cache)
        return z["feats"], z["hists"]
    feats, hists = catalog_features(products, ext, "catalog")
    np.savez(cache, feats=feats, hists=hists)
    return feats, hists


def average_precision(ranked_relevant: np.ndarray) -> float:
    hits = np.flatnonzero(ranked_relevant)
    if len(hits) == 0:
        return 0.0
    return float(np.mean(np.arange(1, len(hits) + 1) / (hits + 1)))


def retrieval_report(feats, codes, hists, products, queries: np.ndarray, w_colour: float) -> dict:
    from shards.codes import hamming
    keys = [(p.fields.get("articleType"), p.fields.get("gender")) for p in products]
    colours = [p.fields.get("baseColour") for p in products]
    cats = np.array([p.fields.get("articleType", "") for p in products])
    gallery = np.setdiff1d(np.arange(len(products)), queries)
    f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    out = {"queries": len(queries), "gallery": len(gallery), "bits": codes.shape[1] * 64}
    aps = {"float": [], "binary": [], "binary_colour": [], "colour_rel": [], "unfiltered": [], "filtered": []}
    p4, scanned = [], []
    for q in queries:
        rel = np.array([keys[g] == keys[q] for g in gallery])
        rel_c = rel & np.array([colours[g] == colours[q] for g in gallery])
        d_float = -(f[gallery] @ f[q])
        ham = hamming(codes[gallery], codes[q]) / (codes.shape[1] * 64)
        cd = np.maximum(0, 1 - np.sqrt(hists[gallery] * hists[q]).sum(axis=1))
        d_comb = ham + w_colour * cd
        aps["float"].append(average_precision(rel[np.argsort(d_float, kind="stable")]))
        aps["binary"].append(average_precision(rel[np.argsort(ham, kind="stable")]))
        aps["binary_colour"].append(average_precision(rel_c[np.argsort(d_comb, kind="stable")]))
        aps["colour_rel"].append(average_precision(rel_c[np.argsort(ham, kind="stable")]))
        order = np.argsort(d_comb, kind="stable")
        p4.append(rel[order[:4]].mean())
        aps["unfiltered"].append(average_precision(rel[order]))
        mask = cats[gallery] == cats[q]
        scanned.append(mask.mean())
        aps["filtered"].append(average_precision(rel[mask][np.argsort(d_comb[mask], kind="stable")])
                               if mask.any() else 0.0)
    out.update({"map_float": float(np.mean(aps["float"])), "map_binary": float(np.mean(aps["binary"])),
                "map_binary_colour": float(np.mean(aps["binary_colour"])),
                "map_binary_colour_relevance_without_colour": float(np.mean(aps["colour_rel"])),
                "p_at_4": float(np.mean(p4)), "w_colour": w_colour,
                # the filter as an upper bound: the query's labelled category, which never excludes a
                # relevant item (eval_retrieval adds the filter the system applies, models/filter_eval.py)
                "labelled_category": {"scanned_fraction": float(np.mean(scanned)),
                                      "map_unfiltered": float(np.mean(aps["unfiltered"])),
                                      "map_filtered": float(np.mean(aps["filtered"]))}})
    return out


def rank_of_item(distances: np.ndarray, item: int) -> int:
    """0-based place of `item` when the catalog is sorted by distance, ties by catalog position (as a
    shard breaks them by id)."""
    return int((distances < distances[item]).sum() + (distances[:item] == distances[item]).sum())


def hard_view_recall(ext: FeatureExtractor, book: CodeBook, catalog_codes: np.ndarray, products: list[Product],
                     queries: np.ndarray, seed: int = 13, log=print) -> dict:
    """The code book alone at the instance level: one hard view of each query product (cropped,
    rotated, recoloured, pasted on an odd-numbered ccp-tags photo, which training never pastes on,
    JPEG), cut at its pasted box as a user's box would be, found by Hamming distance among the whole
    catalog's codes: recall of the source product at 1 and 10. No detector, no attribute filter."""
    from shards.codes import hamming
    from .data import data_root
    from .instance_projection import hard_view_features
    backgrounds = sorted((data_root() / "ccp-tags" / "images").glob("*.jpg"))[1::2]
    views, src = hard_view_features(products, queries, ext, backgrounds, 1, seed=seed, log=log)
    ranks = np.array([rank_of_item(hamming(catalog_codes, code), item) for code, item in zip(book.encode(views), src)])
    return {"hard_view_recall_at_1": float(np.mean(ranks < 1)), "hard_view_recall_at_10": float(np.mean(ranks < 10))}


def codebook_instance_recall(path, split: str = "test", log=print) -> dict:
    """hard_view_recall of a features file (shipped or not) over the shared catalog."""
    from .features import load_features
    ext, book = load_features(path)
    products = load_catalog()
    ids = load_splits()[split]
    queries = np.array([i for i, p in enumerate(products) if p.id in ids])
    codes = book.encode(shared_catalog_features(products, ext)[0])
    return {"weights": str(path), "split": split, **hard_view_recall(ext, book, codes, products, queries, log=log)}


def fit_codebook(bits: int = 256, image_size: int = 160, instance_views: int = 2, category_weight: float = 0.03,
                 epochs: int = 20, backbone: str = "efficientnet_lite0", trunk: str | None = None,
                 out: Path | None = None, log=print) -> dict:
    """Fit the code book (written to `out`, by default the shipped features file); with instance_views > 0
    through a learnt projection. googlenet needs a `trunk`: a `train googlenet` checkpoint, or
    "imagenet" for torchvision's weights in torch's hub cache."""
    from .data import data_root
    from .features import imagenet_googlenet_trunk
    from .instance_projection import folded_codebook, hard_view_features, train_projection
    from .train_googlenet import trunk_state
    if backbone == "googlenet" and not trunk:
        raise InvalidInput("a googlenet code book needs --trunk: a `train googlenet` checkpoint, or imagenet")
    if backbone != "googlenet" and trunk:
        raise InvalidInput(f"--trunk is for the googlenet backbone; {backbone} has its own ImageNet weights")
    weights = None if not trunk else imagenet_googlenet_trunk() if trunk == "imagenet" else trunk_state(trunk)
    if weights is not None:   # fitted on the weights the file will serve: it stores them in half precision
        weights = {k: (v.half().to(v.dtype) if v.is_floating_point() else v) for k, v in weights.items()}
    cfg = FeatureConfig(backbone=backbone, image_size=image_size, bits=bits, transform_input=trunk == "imagenet")
    ext = FeatureExtractor(cfg, trunk=weights)
    products = load_catalog()
    splits = load_splits()
    feats, hists = shared_catalog_features(products, ext)
    idx = {s: np.array([i for i, p in enumerate(products) if p.id in splits[s]]) for s in ("train", "val", "test")}
    float_feats = feats
    if instance_views:
        # even-numbered street photos only: the instance evaluation draws its backgrounds from all
        backgrounds = sorted((data_root() / "ccp-tags" / "images").glob("*.jpg"))[::2]
        views, src = hard_view_features(products, idx["train"], ext, backgrounds,
                                        instance_views, seed=7, log=log)
        labels = np.array([f"{p.fields.get('articleType')}|{p.fields.get('gender')}" for p in products])
        w = train_projection(feats, idx["train"], views, src, labels, epochs=epochs,
                             category_weight=category_weight, log=log)
        book = folded_codebook(feats, idx["train"], w, bits)
        float_feats = feats @ w
    else:
        book = CodeBook.fit(feats[idx["train"]], bits)
    codes = book.encode(feats)
    # the colour weight: tuned on the validation split against the colour-aware relevance
    best = max((retrieval_report(float_feats, codes, hists, products, idx["val"][:300], wc)["map_binary_colour"], wc)
               for wc in (0.0, 0.1, 0.2, 0.3, 0.5, 0.8))
    out = Path(out) if out else ASSETS / "features.pt"
    save_features(out, ext, book, w_colour=best[1])
    report = retrieval_report(float_feats, codes, hists, products, idx["test"], best[1])
    report.update(hard_view_recall(ext, book, codes, products, idx["test"], log=log))
    report.update({"w_colour_tuned_on_val": best[1], "instance_views": instance_views,
                   "category_weight": category_weight if instance_views else None,
                   "backbone": backbone, "trunk": trunk, "weights": str(out)})
    return report


def eval_retrieval(data=None, limit: int | None = None, split: str | None = None, log=print,
                   assets=None) -> dict:
    """`fashion-search eval retrieval`: a catalog folder's own split gives the queries, the rest the gallery.
    `assets`: the model folder to measure (default models/assets, or FASHION_ASSETS)."""
    from .features import load_features
    from .data import products_dir
    folder = data or products_dir()
    products = load_catalog(folder)
    products, skipped = usable_products(products[:limit] if limit else products)
    assets = Path(assets or ASSETS)
    ext, book = load_features(assets / "features.pt")
    feats, hists = (shared_catalog_features(products, ext) if data is None and not limit
                    else catalog_features(products, ext, None))
    codes = book.encode(feats)
    if data is None:
        ids = load_splits()[split or "test"]
        queries = np.array([i for i, p in enumerate(products) if p.id in ids])
    else:  # another catalog: its own deterministic 10 % as queries
        rng = np.random.default_rng(0)
        queries = np.sort(rng.choice(len(products), max(1, len(products) // 10), replace=False))
    w = float(torch.load(assets / "features.pt", weights_only=True).get("w_colour", torch.tensor(0.3)))
    # float = the code book's projection before the threshold, so map_float - map_binary is what
    # binarising costs (the learnt projection is part of both)
    report = {"data": str(folder), "assets": str(assets), **skipped,
              **retrieval_report(book.project(feats), codes, hists, products, queries, w)}
    # the inverted index's promise as the system filters: attributes the model reads on each query
    from .filter_eval import filter_report, read_queries
    from .instance_eval import catalog_index_cache, index_catalog_items
    from .pipeline import WHAT_IT_IS, Pipeline
    pipeline = Pipeline.load(assets)
    cache = catalog_index_cache(folder, len(products), pipeline.bits, assets) if data is None and not limit else None
    catalog = index_catalog_items(pipeline, products, cache=cache, log=log)
    analyses = read_queries(pipeline, products, queries, log=log)
    report.update(filter_report(pipeline, products, queries, catalog, analyses, log=log))
    report["what_it_is_filter"] = filter_report(pipeline, products, queries, catalog, analyses, fields=WHAT_IT_IS,
                                                log=log)
    return report
