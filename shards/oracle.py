"""The slow twin of `Shard.search`: brute force over plain Python/numpy data.

Items are a dict id -> (code (W,) uint64, quantised hist (H,) uint8, set of tokens).
Every candidate is scored with whole-array numpy and fully sorted by (score, key);
relaxation counts candidates level by level. Tests compare the shard (and the
cluster) to this on random input; it shares only the id-key and distance
definitions with the fast path.
"""
from __future__ import annotations

import numpy as np

from .codes import colour_distance, hamming, id_key
from .query import PreparedQuery


def brute_force_search(items: dict, q: PreparedQuery, level: int | None = None):
    """Returns (hits as [(id, score, hamming, colour_distance, matched)], level, counts)."""
    ids = list(items)
    tokens = [items[i][2] for i in ids]

    def satisfying(lv):
        need = set(q.constraints(lv))
        return [j for j, toks in enumerate(tokens) if need <= toks]

    counts = [len(satisfying(lv)) for lv in range(len(q.required) + 1)]
    if level is None:
        level = next((j for j, n in enumerate(counts) if n >= q.k), len(q.required))
        if q.scan_budget > 0:  # widen: the most relaxed level up to q.widen within the budget
            within = [j for j in range(level, q.widen + 1) if counts[j] <= q.scan_budget * len(items)]
            level = within[-1] if within else level
    cand = satisfying(level)
    if not cand:
        return [], level, counts
    codes = np.stack([items[ids[j]][0] for j in cand])
    hists = np.stack([items[ids[j]][1] for j in cand])
    bonus = np.array([sum(t in tokens[j] for t in q.optional) for j in cand], np.float64)
    ham = hamming(codes, q.code)
    cd = colour_distance(hists, q.qhist)
    score = (q.w_hamming * ham * (1.0 / (64 * len(q.code))) - q.w_optional * bonus) + q.w_colour * cd
    keys = np.array([id_key(ids[j]) for j in cand], np.uint64)
    order = np.lexsort((keys, score))[: q.k]
    hits = []
    for o in order:
        j = cand[o]
        matched = tuple(t for t in dict.fromkeys(q.filters + q.required + q.optional) if t in tokens[j])
        hits.append((ids[j], float(score[o]), int(ham[o]), float(cd[o]), matched))
    return hits, level, counts
