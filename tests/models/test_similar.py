"""More like this (models/similar.py): the query an indexed item makes of itself, its terms, and
its answers through the coordinator and real shards against the brute-force oracle."""
import asyncio

import numpy as np

from models.similar import similar_query, similar_terms, without_item
from shards.codes import dequantize_hist, quantize_hists
from shards.oracle import brute_force_search
from shards.query import MAX_K, Hit, prepare

from ..coordinator.test_coordinator import make, tuples
from ..shards.helpers import model_add, random_items


def test_what_it_is_is_required_category_first_and_the_rest_is_optional():
    tokens = ["baseColour=Black", "gender=Men", "articleType=Tshirts", "usage=Casual", "usage=Sports"]
    assert similar_terms(tokens) == {"required": ("articleType=Tshirts", "gender=Men"),
                                     "optional": ("baseColour=Black", "usage=Casual", "usage=Sports")}
    # two genders (the read one and a runner-up): which was read is not stored, so neither is required
    two = similar_terms(["articleType=Tshirts", "gender=Men", "gender=Unisex"])
    assert two == {"required": ("articleType=Tshirts",), "optional": ("gender=Men", "gender=Unisex")}
    assert similar_terms(["baseColour=Red"]) == {"required": (), "optional": ("baseColour=Red",)}


def test_a_stored_histogram_read_back_quantises_to_itself():
    rng = np.random.default_rng(0)
    hists = rng.random((500, 64)) ** rng.integers(1, 8, (500, 1))
    hists[rng.random((500, 64)) < 0.5] = 0
    hists[:, 0] += 0.01
    q = quantize_hists(hists, 64)
    again = quantize_hists(dequantize_hist(q), 64)
    steps = np.abs(again.astype(int) - q.astype(int))
    assert steps.max() <= 1 and (steps.max(axis=1) == 0).mean() > 0.99


def test_the_query_asks_one_more_and_the_item_is_left_out():
    item = {"id": 7, "code": np.zeros(2, np.uint64), "hist": np.full(8, 90, np.uint8),
            "attributes": ["articleType=c1", "baseColour=k2"]}
    assert similar_query(item, 10, 0.5).k == 11 and similar_query(item, MAX_K, 0.5).k == MAX_K
    assert similar_query(item, 3, 0.5, ("gender=Women",)).filters == ("gender=Women",)
    hits = [Hit(id=i, key=i, score=0.0, hamming=0, colour_distance=0.0, matched=()) for i in (7, 3, 4, 5)]
    assert [h.id for h in without_item(hits, 7, 2)] == [3, 4]
    assert [h.id for h in without_item(hits[1:], 7, 2)] == [3, 4]     # not found: still k at most


def test_similar_items_through_the_coordinator_equal_brute_force(tmp_path):
    rng = np.random.default_rng(4)
    coord = make(tmp_path, 3)
    ids, codes, hists, attrs = random_items(rng, 400, 2, 8, str_ids=True)
    asyncio.run(coord.upsert(ids, codes, hists, attrs))
    model = {}
    model_add(model, ids, codes, hists, attrs, 8)
    for j in rng.choice(len(ids), 25, replace=False):
        item = asyncio.run(coord.get(ids[j]))
        k = int(rng.integers(1, 12))
        filters = ("gender=Women",) if j % 3 == 0 else ()
        q = similar_query(item, k, 0.3, filters)
        r = asyncio.run(coord.search(q))
        want, level, _ = brute_force_search(model, prepare(q, 128, 8))
        assert tuples(r) == want and r.level == level and not r.partial
        best = [h.id for h in r.hits if h.score == r.hits[0].score]
        if not filters and r.level == 0 and len(best) < q.k:   # unrelaxed, the item is among the closest
            assert ids[j] in best and r.hits[0].hamming == 0
        assert ids[j] not in [h.id for h in without_item(r.hits, ids[j], k)]
