"""Random catalogs and a model of what a shard should hold, for oracle tests; a full disk."""
import errno
import os

import numpy as np

from shards.codes import quantize_hists
from shards.query import Query

CATS = [f"articleType=c{i}" for i in range(4)]
COLOURS = [f"baseColour=k{i}" for i in range(5)]
GENDERS = ["gender=Men", "gender=Women"]


def random_items(rng, n, words, bins, start=0, str_ids=False):
    ids = [f"sku-{i}" if str_ids and i % 2 else i for i in range(start, start + n)]
    codes = rng.integers(0, 2**63, (n, words), dtype=np.uint64) | (
        rng.integers(0, 2, (n, words), dtype=np.uint64) << np.uint64(63))
    # few distinct codes and histograms so ties (broken by id) really happen
    codes = codes[rng.integers(0, max(2, n // 3), n) % n]
    hists = rng.integers(0, 4, (n, bins)).astype(float)
    hists[:, 0] += 1
    attrs = []
    for _ in range(n):
        toks = []
        if rng.random() < 0.9:
            toks.append(CATS[rng.integers(len(CATS))])
        toks.append(COLOURS[rng.integers(len(COLOURS))])
        if rng.random() < 0.7:
            toks.append(GENDERS[rng.integers(2)])
        attrs.append(toks)
    return ids, codes, hists, attrs


def model_add(model, ids, codes, hists, attrs, bins):
    qh = quantize_hists(hists, bins)
    for i, item_id in enumerate(ids):
        model[item_id] = (codes[i], qh[i], set(attrs[i]))


def random_query(rng, words, bins):
    pool = CATS + COLOURS + GENDERS
    req = tuple(dict.fromkeys(pool[j] for j in rng.integers(0, len(pool), rng.integers(0, 3))))
    opt = tuple(t for t in dict.fromkeys(pool[j] for j in rng.integers(0, len(pool), rng.integers(0, 3)))
                if t not in req)
    hist = rng.integers(0, 4, bins).astype(float)
    hist[0] += 1
    budget = float(rng.choice([0.0, 0.0, 0.05, 0.3, 0.7]))   # a scan budget, some of the time
    return Query(code=rng.integers(0, 2**63, words, dtype=np.uint64), hist=hist,
                 k=int(rng.integers(1, 25)), required=req, optional=opt,
                 w_hamming=float(rng.choice([0.0, 1.0, 2.5])), w_colour=float(rng.choice([0.0, 0.3, 1.0])),
                 w_optional=float(rng.choice([0.0, 0.05, 0.5])),
                 widen=int(rng.integers(0, len(req) + 1)) if budget else 0, scan_budget=budget)


def as_tuples(result):
    return [(h.id, h.score, h.hamming, h.colour_distance, h.matched) for h in result.hits]


class FullDisk:
    """Stands in for a module's `os` (monkeypatch): its fsync finds the disk full, the rest is os."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

