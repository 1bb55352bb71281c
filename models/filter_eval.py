"""The inverted index's promise, measured as the system filters: what is scanned, and what it costs.

Category-level queries (catalog photos of the test split, the rest of the catalog as the
gallery) go the query path with nothing given: the model reads the attributes itself
(option 1) in the whole photo (a studio photo has nothing else in it), and
`models.pipeline.query_terms` makes the query as the REST front does (what it reads with
p >= REQUIRED_P required, a sure colour, season or usage only within the scan budget,
relaxed while fewer than k = 10 items match). The gallery is indexed by the item path (title ->
category -> guided attributes, runners-up included), as `fashion-search index` does.

Ranking uses `shards.oracle.brute_force_search`, the brute-force twin the shard is
tested against, so the scores, the relaxation and the counts are the shard's own, over
the whole filtered list rather than a top-k. Average precision counts every relevant
item (same articleType and gender) of the gallery: one the filter excluded is a miss.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .data import decode_image

K = 10   # the relaxation's k: the level is the least relaxation giving k candidates


def average_precision_of(ranked_relevant: np.ndarray, n_relevant: int) -> float:
    """AP over a ranked list; relevant items missing from it count as misses."""
    hits = np.flatnonzero(ranked_relevant)
    if n_relevant == 0:
        return 0.0
    return float(np.sum(np.arange(1, len(hits) + 1) / (hits + 1)) / n_relevant)


def read_queries(pipeline, products, idx, batch: int = 32, log=print):
    """The query path's analysis of each photo: attributes read unguided, ROI = the whole photo."""
    out = []
    for i in range(0, len(idx), batch):
        imgs = [decode_image(products[j].image) for j in idx[i: i + batch]]
        out += pipeline.analyse_batch(imgs, detect=False)
        if (i // batch) % 10 == 0:
            log(f"  read {len(out)}/{len(idx)} queries")
    return out


def ranked_hits(items: dict, q, level: int) -> list:
    """The oracle's answer at `level` as Hit objects (what the shard would answer)."""
    from shards.codes import id_key
    from shards.oracle import brute_force_search
    from shards.query import Hit
    hits, _, _ = brute_force_search(items, q, level)
    return [Hit(i, int(id_key(i)), score, ham, cd, matched) for i, score, ham, cd, matched in hits]


def filter_report(pipeline, products, queries: np.ndarray, catalog, analyses=None, fields=None, log=print) -> dict:
    """`catalog` = (codes, hists, tokens) of every product from the item path; `analyses`, the
    queries' (read here when not given). `fields`: require only tokens of these fields (the
    others the query reads sure enough become optional), to compare filtering policies."""
    from shards.codes import quantize_hists
    from shards.oracle import brute_force_search
    from shards.query import Query, prepare
    from .hedge import hedge_query, merge_hits
    codes, hists, tokens = catalog
    gallery = np.setdiff1d(np.arange(len(products)), queries)
    qhists = quantize_hists(hists[gallery], hists.shape[1])
    items = {int(g): (codes[g], qhists[j], set(tokens[g])) for j, g in enumerate(gallery)}
    label = [(p.fields.get("articleType"), p.fields.get("gender")) for p in products]
    analyses = analyses if analyses is not None else read_queries(pipeline, products, queries, log=log)
    aps = {"filtered": [], "unfiltered": []}
    scanned, relaxed, p4, category_right, hedged = [], [], [], [], []
    for n, (qi, a) in enumerate(zip(queries.tolist(), analyses)):
        relevant = {int(g) for g in gallery if label[g] == label[qi]}
        terms = a.query_terms()
        if fields is not None:   # a policy to compare: only these fields required, and no budget
            required = terms["required"]
            keep = tuple(t for t in required if t.split("=", 1)[0] in fields)
            terms = {"required": keep, "optional": tuple(t for t in required if t not in keep) + terms["optional"]}
        query = Query(code=a.code, hist=a.hist, k=K, w_colour=pipeline.w_colour, **terms)
        hedge = hedge_query(query, a.hedge_terms()) if fields is None else None
        q = prepare(query, pipeline.bits, hists.shape[1], max_k=len(gallery))
        _, level, counts = brute_force_search(items, q)
        everything = replace(q, k=len(gallery))
        filtered = ranked_hits(items, everything, level)
        n_scanned = counts[level]
        if hedge is not None:   # the runner-up category's search too, merged by score (models/hedge.py)
            hq = prepare(hedge, pipeline.bits, hists.shape[1], max_k=len(gallery))
            _, h_level, h_counts = brute_force_search(items, hq)
            filtered = merge_hits(filtered, ranked_hits(items, replace(hq, k=len(gallery)), h_level), len(gallery))
            n_scanned += h_counts[h_level]
            hedged.append(True)
        else:
            hedged.append(False)
        unfiltered = ranked_hits(items, replace(everything, required=(), widen=0), 0)
        for name, hits in (("filtered", filtered), ("unfiltered", unfiltered)):
            ranked = np.array([h.id in relevant for h in hits], bool)
            aps[name].append(average_precision_of(ranked, len(relevant)))
            if name == "filtered":
                p4.append(float(ranked[:4].mean()) if len(ranked) else 0.0)
        scanned.append(n_scanned / len(gallery))
        relaxed.append(level > 0)
        read = [t.split("=", 1)[1] for t in q.required if t.startswith("articleType=")]
        category_right.append(not read or read[0] == label[qi][0])
        if n % 200 == 0:
            log(f"  searched {n + 1}/{len(queries)}")
    return {"scanned_fraction": float(np.mean(scanned)), "map_filtered": float(np.mean(aps["filtered"])),
            "map_unfiltered": float(np.mean(aps["unfiltered"])), "p_at_4_filtered": float(np.mean(p4)),
            "relaxed_fraction": float(np.mean(relaxed)), "hedged_fraction": float(np.mean(hedged)),
            "required_category_right": float(np.mean(category_right)), "k": K}
