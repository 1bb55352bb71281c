"""How alike "more like this" answers are (models/similar.py), on the shared catalog.

Each of `n` test-split products asks for its 4 most similar items, as GET
/items/{id}/similar does, against the whole catalog indexed by the item path (the
index `eval instances` caches) in a real `Shard`. Precision@4 of the same labelled
articleType and gender, and of those plus baseColour, against the same code and colour
searched with no attribute at all; and the fraction of the catalog scanned.

    python -c "from models.similar_eval import similar_precision as s; print(s())"
"""
from __future__ import annotations

import numpy as np

from shards.codes import dequantize_hist
from shards.query import Query

from .data import ASSETS, load_catalog, load_splits, products_dir, usable_products
from .instance_eval import catalog_index_cache, index_catalog_items


def similar_precision(n: int = 500, seed: int = 0) -> dict:
    from shards.shard import Shard, ShardConfig
    from .features import colour_weight
    from .pipeline import Pipeline
    from .similar import similar_query, without_item
    products, _ = usable_products(load_catalog(products_dir()))
    cache = catalog_index_cache(products_dir(), len(products), 256)
    codes, hists, tokens = index_catalog_items(Pipeline.load() if not cache.exists() else None, products,
                                               cache=cache)
    shard = Shard(None, ShardConfig(bits=codes.shape[1] * 64, hist_bins=hists.shape[1]), fsync=False)
    shard.upsert(list(range(len(products))), codes, hists, tokens)
    w = colour_weight(ASSETS / "features.pt")
    test = load_splits()["test"]
    picks = np.random.default_rng(seed).choice([i for i, p in enumerate(products) if p.id in test], n, replace=False)
    kinds = {"type_gender": ("articleType", "gender"), "type_gender_colour": ("articleType", "gender", "baseColour")}
    hits = {"similar": [], "unfiltered": []}
    scanned = []
    for i in picks.tolist():
        item = shard.get(i)
        r = shard.search(similar_query(item, 4, w))
        scanned.append(r.scanned / len(products))
        hits["similar"].append([h.id for h in without_item(r.hits, i, 4)])
        plain = shard.search(Query(code=item["code"], hist=dequantize_hist(item["hist"]), k=5, w_colour=w))
        hits["unfiltered"].append([h.id for h in without_item(plain.hits, i, 4)])

    def precision(way, fields):
        label = lambda j: tuple(products[j].fields.get(f) for f in fields)  # noqa: E731
        return float(np.mean([np.mean([label(h) == label(i) for h in hs]) if hs else 0.0
                              for i, hs in zip(picks.tolist(), hits[way])]))
    out = {"items": n, "catalog": len(products), "scanned_fraction": float(np.mean(scanned))}
    for kind, fields in kinds.items():
        out.update({f"{way}_{kind}_p_at_4": precision(way, fields) for way in hits})
    return out
