"""Instance-level retrieval through the whole pipeline: find the very product in a street-like photo.

Each query is a catalog photo made hard: a random crop (75-100% of each side), a small
rotation (+-10 degrees), colour jitter (brightness, contrast, saturation +-20%), scaled to
40-70% of the height of a street photo from ccp-tags and pasted at a random place, then
JPEG-recompressed at quality 50-85. The query path runs on it as a user's photo would
(guided detector, attributes read in the ROI, code and colour); once more with the
pasted rectangle as the user's box (option 3), which separates finding the product from
describing it; and once with the catalog picking the ROI among the detector's top regions
(`Pipeline.query(match=...)`, the best hit's score per region). A real in-memory
`Shard` holding the catalog ranks it: required attributes intersected (relaxed in order
when too few, a sure colour, season or usage let go within the scan budget), optional ones
as a bonus, Hamming plus colour. Relevant = the source
product; recall@1 and @10. The catalog is indexed by the item path (`Pipeline.items`:
title -> category -> guided attributes, whole-photo ROI), as `fashion-search index` does.
"""
from __future__ import annotations

import io
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from .data import ASSETS, data_root, decode_image, load_catalog, load_splits, products_dir, usable_products
from .train_attributes import CACHE


def required_p() -> float:
    from . import pipeline
    return pipeline.REQUIRED_P


def make_hard(item: Image.Image, background: Image.Image, rng: np.random.Generator):
    """The hard photo, and the box (x, y, w, h) where the product was pasted."""
    w, h = item.size
    cw, ch = int(w * rng.uniform(0.75, 1.0)), int(h * rng.uniform(0.75, 1.0))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = item.crop((x, y, x + cw, y + ch)).rotate(float(rng.uniform(-10, 10)), resample=Image.BILINEAR,
                                                   expand=True, fillcolor=(255, 255, 255))
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        out = enhance(out).enhance(float(rng.uniform(0.8, 1.2)))
    bg = background.convert("RGB")
    bg = bg.resize((max(1, round(bg.width * 640 / bg.height)), 640), Image.BILINEAR)
    scale = rng.uniform(0.4, 0.7) * bg.height / out.height
    out = out.resize((max(1, min(bg.width, round(out.width * scale))), max(1, round(out.height * scale))),
                     Image.BILINEAR)
    px, py = int(rng.integers(0, bg.width - out.width + 1)), int(rng.integers(0, bg.height - out.height + 1))
    bg.paste(out, (px, py))
    buf = io.BytesIO()
    bg.save(buf, format="JPEG", quality=int(rng.integers(50, 86)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), (px, py, out.width, out.height)


def assets_digest(assets=None) -> str:
    """A short hash of the models that index the catalog and of how, so a cached index follows them."""
    import hashlib
    from .pipeline import ALTERNATIVE_P
    folder = Path(assets) if assets else ASSETS
    h = hashlib.sha1(f"runners-up {ALTERNATIVE_P}, title's gender and colour forced".encode())
    for name in ("text.pt", "attributes.pt", "features.pt"):
        h.update((folder / name).read_bytes())
    return h.hexdigest()[:12]


def catalog_index_cache(folder: Path, n_items: int, bits: int, assets=None) -> Path:
    """Where index_catalog_items keeps the shared catalog's index for these models."""
    return CACHE / f"instance-index-{Path(folder).name}-{n_items}-{bits}-{assets_digest(assets)}.npz"


def index_catalog_items(pipeline, products, batch: int = 32, cache: Path | None = None, log=print):
    """The item path over the catalog: codes, histograms and recognised attributes (cached)."""
    if cache is not None and cache.exists():
        z = np.load(cache, allow_pickle=False)
        return z["codes"], z["hists"], [[x for x in t if x] for t in z["tokens"].tolist()]
    codes, hists, tokens = [], [], []
    t0 = time.perf_counter()
    for i in range(0, len(products), batch):
        part = products[i: i + batch]
        imgs = [decode_image(p.image) for p in part]
        for a in pipeline.items(imgs, [p.title for p in part]):
            codes.append(a.code)
            hists.append(a.hist)
            tokens.append(a.index_tokens())
        if (i // batch) % 20 == 0:
            log(f"  indexed {i + len(part)}/{len(products)} ({(i + len(part)) / (time.perf_counter() - t0):.1f}/s)")
    codes, hists = np.stack(codes), np.stack(hists)
    if cache is not None:
        width = max(len(t) for t in tokens)
        table = np.array([t + [""] * (width - len(t)) for t in tokens])
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, codes=codes, hists=hists, tokens=table)
    return codes, hists, [[x for x in t if x] for t in tokens]


def rank_of(item, hits, miss: int = 11) -> int:
    """Where `item` is among the hits (1 = first), or `miss`."""
    ids = [h.id for h in hits]
    return ids.index(item) + 1 if item in ids else miss


def instance_recall(data=None, n_queries: int = 200, seed: int = 0, assets=None, split: str = "test",
                    log=print) -> dict:
    """`fashion-search eval instances`: recall@1/@10 of the source product, filtered and not."""
    from shards.query import Query
    from shards.shard import Shard, ShardConfig
    from .hedge import hedge_query, merge_hits, paired, with_hedges
    from .pipeline import Pipeline
    folder = Path(data) if data else products_dir()
    products, skipped = usable_products(load_catalog(folder))
    pipeline = Pipeline.load(assets)
    cache = catalog_index_cache(folder, len(products), pipeline.bits, assets) if data is None else None
    codes, hists, tokens = index_catalog_items(pipeline, products, cache=cache, log=log)
    shard = Shard(None, ShardConfig(bits=pipeline.bits, hist_bins=hists.shape[1]), fsync=False)
    shard.upsert(list(range(len(products))), codes, hists, tokens)

    rng = np.random.default_rng(seed)
    chosen = load_splits()[split] if data is None else {p.id for p in products}
    pool = [i for i, p in enumerate(products) if p.id in chosen]
    picks = sorted(rng.choice(len(pool), min(n_queries, len(pool)), replace=False).tolist())
    backgrounds = sorted((data_root() / "ccp-tags" / "images").glob("*.jpg"))
    ranks = {name: [] for name in ("filtered", "unfiltered", "user_box", "user_box_unfiltered", "named_category",
                                   "region_match", "region_match_unfiltered",
                                   # the same queries without the runner-up category's search (models/hedge.py)
                                   "filtered_unhedged", "user_box_unhedged", "region_match_unhedged")}
    hedged = Counter()     # queries that hedged, by way of asking

    def best_scores(codes, hists):
        """The score of the best unfiltered hit for each candidate region (one batch through the shard)."""
        rs = shard.search_batch([Query(code=c, hist=h, k=1, w_colour=pipeline.w_colour) for c, h in zip(codes, hists)])
        return [r.hits[0].score if r.hits else float("inf") for r in rs]

    scanned = {name: [] for name in ("filtered", "user_box", "named_category",
                                     "filtered_unhedged", "user_box_unhedged", "named_category_unhedged")}
    roi_found, lat, lat_match = 0, [], []
    known = {t.split("=", 1)[1] for t in pipeline.taxonomy.category_tokens()}

    def nameable(category):
        """The category a user would name: the product's own, when the taxonomy has it."""
        return category if category in known else None
    for j in picks:
        src = pool[j]
        bg = decode_image(backgrounds[int(rng.integers(len(backgrounds)))]) if backgrounds else Image.new(
            "RGB", (427, 640), (128, 128, 128))
        img, box = make_hard(decode_image(products[src].image), bg, rng)
        t = time.perf_counter()
        auto = pipeline.query(img)
        lat.append((time.perf_counter() - t) * 1e3)
        roi_found += auto.roi_source == "detector"
        boxed = pipeline.query(img, box=box)     # option 3: the user draws the product's box
        named = pipeline.query(img, category=nameable(products[src].fields.get("articleType")))   # option 2
        t = time.perf_counter()
        matched = pipeline.query(img, match=best_scores)   # option 1, the catalog picking the region
        lat_match.append((time.perf_counter() - t) * 1e3)
        none = {"required": (), "optional": ()}
        for name, terms, a in (("filtered", auto.query_terms(), auto), ("unfiltered", none, auto),
                               ("user_box", boxed.query_terms(), boxed), ("user_box_unfiltered", none, boxed),
                               ("named_category", named.query_terms(), named),
                               ("region_match", matched.query_terms(), matched),
                               ("region_match_unfiltered", none, matched)):
            q = Query(code=a.code, hist=a.hist, k=10, w_colour=pipeline.w_colour, **terms)
            h = hedge_query(q, a.hedge_terms()) if terms is not none else None
            (r, rh), = paired(shard.search_batch(with_hedges([q], [h])), [h])
            hits = merge_hits(r.hits, rh.hits, q.k) if rh is not None else r.hits
            ranks[name].append(rank_of(src, hits))
            if rh is not None:
                ranks[f"{name}_unhedged"].append(rank_of(src, r.hits))
                hedged[name] += 1
            elif f"{name}_unhedged" in ranks:
                ranks[f"{name}_unhedged"].append(ranks[name][-1])
            if name in scanned:
                scanned[name].append((r.scanned + (rh.scanned if rh is not None else 0)) / len(products))
                scanned[f"{name}_unhedged"].append(r.scanned / len(products))
    out = {"queries": len(picks), "catalog": len(products), "split": split if data is None else None,
           "assets": str(Path(assets) if assets else ASSETS), **skipped}
    for name, r in ranks.items():
        prefix = name.replace("filtered", "instance", 1) if name.startswith("filtered") else name  # the name
        out.update({f"{prefix}_recall_at_{n}": float(np.mean(np.array(r) <= n)) for n in (1, 10)})
    out.update({"required_p": required_p(),
                "scanned_fraction": float(np.mean(scanned["filtered"])),
                "user_box_scanned_fraction": float(np.mean(scanned["user_box"])),
                "named_category_scanned_fraction": float(np.mean(scanned["named_category"])),
                "unhedged_scanned_fraction": float(np.mean(scanned["filtered_unhedged"])),
                "user_box_unhedged_scanned_fraction": float(np.mean(scanned["user_box_unhedged"])),
                "detector_roi_fraction": roi_found / len(picks),
                "hedged_fraction": hedged["filtered"] / len(picks),
                "user_box_hedged_fraction": hedged["user_box"] / len(picks),
                "query_p50_ms": float(np.median(lat)), "region_match_query_p50_ms": float(np.median(lat_match))})
    return out
