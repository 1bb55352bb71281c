"""The shard's fused scan against the brute-force oracle, on random catalogs."""
import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shards import kernels
from shards.oracle import brute_force_search
from shards.shard import Shard, ShardConfig

from .helpers import GENDERS, as_tuples, model_add, random_items, random_query


def check_equal(shard, model, rng, n_queries, words, bins):
    for _ in range(n_queries):
        pq = shard.prepare(random_query(rng, words, bins))
        got = shard.search(pq)
        want, level, counts = brute_force_search(model, pq)
        assert as_tuples(got) == want
        assert got.level == level
        assert list(got.counts) == counts[: len(got.counts)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), bits=st.sampled_from([64, 192, 256, 512, 1024]),
       str_ids=st.booleans())
def test_search_equals_oracle(seed, n, bits, str_ids):
    rng = np.random.default_rng(seed)
    words, bins = bits // 64, 8
    shard = Shard(None, ShardConfig(bits=bits, hist_bins=bins))
    model = {}
    ids, codes, hists, attrs = random_items(rng, n, words, bins, str_ids=str_ids)
    shard.upsert(ids, codes, hists, attrs)
    model_add(model, ids, codes, hists, attrs, bins)
    check_equal(shard, model, rng, 10, words, bins)
    # deletes and overwrites, then again
    gone = [i for i in ids if rng.random() < 0.3]
    if gone:
        shard.delete(gone)
        for i in gone:
            del model[i]
    re_ids = [i for i in ids if i in model and rng.random() < 0.2]
    if re_ids:
        _, c2, h2, a2 = random_items(rng, len(re_ids), words, bins)
        shard.upsert(re_ids, c2, h2, a2)
        model_add(model, re_ids, c2, h2, a2, bins)
    check_equal(shard, model, rng, 10, words, bins)
    shard.compact()
    check_equal(shard, model, rng, 5, words, bins)


def test_batch_equals_single_queries():
    rng = np.random.default_rng(7)
    shard = Shard(None, ShardConfig(bits=256, hist_bins=16))
    ids, codes, hists, attrs = random_items(rng, 2000, 4, 16)
    shard.upsert(ids, codes, hists, attrs)
    queries = [random_query(rng, 4, 16) for _ in range(40)]
    queries += [queries[0]] * 3  # identical constraints share one pass
    batch = shard.search_batch(queries)
    for q, r in zip(queries, batch):
        assert as_tuples(shard.search(q)) == as_tuples(r)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_batch_with_filters_and_fixed_levels_equals_oracle(seed):
    """One batch mixing constraint sets, hard filters, optional tokens and the coordinator's fixed levels."""
    rng = np.random.default_rng(seed)
    shard = Shard(None, ShardConfig(bits=128, hist_bins=8))
    model = {}
    ids, codes, hists, attrs = random_items(rng, int(rng.integers(1, 400)), 2, 8, str_ids=bool(rng.random() < 0.5))
    shard.upsert(ids, codes, hists, attrs)
    model_add(model, ids, codes, hists, attrs, 8)
    if rng.random() < 0.5:
        shard.compact()
    qs, levels = [], []
    for _ in range(int(rng.integers(1, 30))):
        q = shard.prepare(random_query(rng, 2, 8))
        if rng.random() < 0.3:  # a hard filter, never relaxed
            q = dataclasses.replace(q, filters=tuple(t for t in (GENDERS[int(rng.integers(2))],)
                                                     if t not in q.required + q.optional))
        qs.append(q)
        levels.append(None if rng.random() < 0.5 else int(rng.integers(0, len(q.required) + 1)))
    for q, lv, got in zip(qs, levels, shard.search_batch(qs, levels)):
        want, level, counts = brute_force_search(model, q, lv)
        assert as_tuples(got) == want
        assert got.level == level
        assert list(got.counts) == counts[: len(got.counts)]


@pytest.mark.parametrize("simd", [True, False], ids=["simd", "scalar"])
@pytest.mark.parametrize("bits", [256, 1024])
def test_large_scan_paths_equal_oracle(bits, simd):
    """Blocks big enough for the SIMD paths (8 codes a step, 32 colour bins a step) and many chunks."""
    with kernels.simd_allowed(simd):
        _large_scan_equals_oracle(bits)


def _large_scan_equals_oracle(bits):
    rng = np.random.default_rng(bits)
    words, bins = bits // 64, 64
    shard = Shard(None, ShardConfig(bits=bits, hist_bins=bins))
    model = {}
    ids, codes, hists, attrs = random_items(rng, 6003, words, bins)
    shard.upsert(ids, codes, hists, attrs)
    model_add(model, ids, codes, hists, attrs, bins)
    shard.delete(ids[::7])
    for i in ids[::7]:
        del model[i]
    check_equal(shard, model, rng, 15, words, bins)


def test_relaxation_drops_least_confident_first():
    rng = np.random.default_rng(3)
    shard = Shard(None, ShardConfig(bits=64, hist_bins=4))
    attrs = [["articleType=Shirts", "baseColour=Navy"]] * 3 + [["articleType=Shirts", "baseColour=Red"]] * 10
    shard.upsert(list(range(13)), rng.integers(0, 2**63, (13, 1), dtype=np.uint64), np.ones((13, 4)), attrs)
    from shards.query import Query
    q = Query(code=np.zeros(1, np.uint64), hist=np.ones(4), k=5,
              required=("articleType=Shirts", "baseColour=Navy"))
    r = shard.search(q)
    assert r.relaxed == ("baseColour=Navy",)
    assert r.counts == (3, 13)
    assert len(r.hits) == 5
    assert all("articleType=Shirts" in h.matched for h in r.hits)


def test_a_batch_scanned_in_several_runs_equals_the_oracle(monkeypatch):
    """Past its bonus budget a scan plan runs early; the heaps carry over, so nothing changes."""
    from shards.plan import ScanPlan
    rng = np.random.default_rng(11)
    shard = Shard(None, ShardConfig(bits=128, hist_bins=8))
    model = {}
    ids, codes, hists, attrs = random_items(rng, 1500, 2, 8)
    shard.upsert(ids, codes, hists, attrs)
    model_add(model, ids, codes, hists, attrs, 8)
    qs = [shard.prepare(random_query(rng, 2, 8)) for _ in range(60)]
    assert sum(bool(q.optional) and q.w_optional > 0 for q in qs) > 10
    runs = []
    real_run = ScanPlan.run
    monkeypatch.setattr(ScanPlan, "bonus_budget", 0)  # run after every task that has a bonus
    monkeypatch.setattr(ScanPlan, "run", lambda self: runs.append(len(self.tasks)) or real_run(self))
    for q, got in zip(qs, shard.search_batch(qs)):
        want, level, _ = brute_force_search(model, q)
        assert as_tuples(got) == want and got.level == level
    assert sum(n > 0 for n in runs) > 5
