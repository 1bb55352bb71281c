"""A query's second search for its runner-up category: when it happens, what it asks, and the merge."""
from dataclasses import replace

import numpy as np
import pytest

from models.hedge import answers, hedge_query, hedged_category, merge_hits, paired, with_hedges
from models.pipeline import HEDGE_P, REQUIRED_P, Analysis, hedge_terms, query_terms
from shards.codes import id_key
from shards.oracle import brute_force_search
from shards.query import Hit, Query, prepare
from shards.shard import Shard, ShardConfig

from ..shards.helpers import CATS, model_add, random_items, random_query

SURE = [("masterCategory=Footwear", 0.99), ("subCategory=Sandal", 0.97), ("gender=Women", 0.95),
        ("articleType=Sandals", 0.9), ("usage=Casual", 0.6), ("baseColour=Black", 0.88)]
RUNNERS_UP = [("articleType=Flats", HEDGE_P + 0.02), ("articleType=Heels", HEDGE_P + 0.01), ("usage=Formal", 0.3)]


def test_a_sure_category_read_by_the_model_hedges_with_its_runner_up():
    terms = query_terms(SURE)
    assert "articleType=Sandals" in terms["required"]
    hedge = hedge_terms(SURE, RUNNERS_UP)
    assert hedge["filters"] == ("articleType=Flats",)               # the most probable other category, hard
    # the rest of the tree follows the category, so it goes; what else was sure stays, in order
    assert hedge["required"] == ("gender=Women", "baseColour=Black")
    assert hedge["optional"] == terms["optional"]
    # the sure colour always narrows the hedge: it looks for the photo's very product, not for a full budget
    assert terms["widen"] == 1 and terms["scan_budget"] > 0 and hedge["widen"] == 0


def test_no_hedge_for_a_given_unsure_or_unrivalled_category():
    assert hedge_terms(SURE, RUNNERS_UP, given_category="Sandals") is None      # the user or the title said so
    unsure = [(t, REQUIRED_P - 0.01) if t.startswith("articleType=") else (t, p) for t, p in SURE]
    assert hedge_terms(unsure, RUNNERS_UP) is None                            # not required, so nothing to hedge
    weak = [("articleType=Flats", HEDGE_P / 2), ("usage=Formal", 0.3)]
    assert hedge_terms(SURE, weak) is None
    assert hedge_terms(SURE, [("articleType=Flats", HEDGE_P)]) is not None
    a = Analysis(category="Sandals", category_source="auto", attributes=SURE, roi=(0, 0, 1, 1),
                 roi_source="detector", code=np.zeros(4, np.uint64), hist=np.ones(8) / 8, alternatives=RUNNERS_UP)
    assert a.hedge_terms() == hedge_terms(SURE, RUNNERS_UP)
    a.category_source = "user"
    assert a.hedge_terms() is None


def test_the_hedge_is_the_query_asking_for_the_runner_up():
    q = Query(code=np.zeros(4, np.uint64), hist=np.ones(8), k=7, filters=("gender=Women",), w_colour=0.8,
              **query_terms(SURE))
    h = hedge_query(q, hedge_terms(SURE, RUNNERS_UP))
    assert h.filters == ("gender=Women", "articleType=Flats")      # the user's filters hold for both
    assert hedged_category(h) == "articleType=Flats" and hedged_category(None) is None
    assert (h.k, h.w_colour, h.code is q.code, h.hist is q.hist) == (7, 0.8, True, True)
    assert hedge_query(q, None) is None


def test_batching_and_pairing_keep_each_query_with_its_hedge():
    qs, hs = ["q0", "q1", "q2"], [None, "h1", "h2"]
    batch = with_hedges(qs, hs)
    assert batch == ["q0", "q1", "q2", "h1", "h2"]
    assert paired(["r0", "r1", "r2", "s1", "s2"], hs) == [("r0", None), ("r1", "s1"), ("r2", "s2")]
    with pytest.raises(ValueError):
        with_hedges(qs, hs[:2])
    with pytest.raises(ValueError):
        paired(["r0", "r1", "r2", "s1", "s2", "extra"], hs)


def hedged_oracle(items: dict, q, h) -> list[tuple]:
    """Brute force over every item: the query's candidates at its level, and the hedge's that score
    better (score, then key) than all of the query's; the k best of those."""
    def candidates(pq):
        _, level, _ = brute_force_search(items, pq)
        return brute_force_search(items, replace(pq, k=len(items)), level)[0]
    def order(hit):
        return (hit[1], id_key(hit[0]))
    mine = candidates(q)
    bar = min(map(order, mine), default=(float("inf"), 0))
    better = [x for x in candidates(h) if order(x) < bar] if h is not None else []
    return sorted(mine + better, key=order)[: q.k]


def hedged_pair(rng, words, bins):
    """A random query and a hedge of it: another category required hard, the rest as the query's."""
    q = random_query(rng, words, bins)
    required = tuple(t for t in q.required if not t.startswith("articleType="))
    terms = {"filters": (CATS[rng.integers(len(CATS))],), "required": required, "optional": q.optional,
             "widen": min(q.widen, len(required)), "scan_budget": q.scan_budget}
    return q, hedge_query(q, terms)


def test_a_hedged_search_equals_brute_force_over_every_item():
    rng = np.random.default_rng(3)
    shard = Shard(None, ShardConfig(bits=128, hist_bins=8), fsync=False)
    items: dict = {}
    ids, codes, hists, attrs = random_items(rng, 500, 2, 8, str_ids=True)
    shard.upsert(ids, codes, hists, attrs)
    model_add(items, ids, codes, hists, attrs, 8)
    pairs = [hedged_pair(rng, 2, 8) for _ in range(60)]
    qs = [q for q, _ in pairs]
    hs = [h if rng.random() < 0.7 else None for _, h in pairs]
    for q, h, (r, hits, rh) in zip(qs, hs, answers(shard.search_batch(with_hedges(qs, hs)), hs)):
        want = hedged_oracle(items, prepare(q, 128, 8), h and prepare(h, 128, 8))
        assert [(x.id, x.score, x.hamming, x.colour_distance, x.matched) for x in hits] == want
        assert (rh is None) == (h is None)
        assert len({x.id for x in hits}) == len(hits)


def test_the_runner_up_comes_first_only_where_it_beats_the_read_category():
    def hit(i, score):
        return Hit(i, id_key(i), score, 0, 0.0, ())
    read = [hit(1, 0.2), hit(2, 0.3), hit(5, 0.5)]
    runner_up = [hit(3, 0.1), hit(0, 0.2), hit(4, 0.2), hit(6, 0.25)]   # 0.2 ties: the id key breaks them
    assert [h.id for h in merge_hits(read, runner_up, 10)] == [3, 0, 1, 2, 5]
    assert [h.id for h in merge_hits(read, runner_up, 2)] == [3, 0]
    assert merge_hits([], runner_up, 2) == runner_up[:2] and merge_hits(read, [], 2) == read[:2]
