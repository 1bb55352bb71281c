"""The REST answer of a photo whose category hedges: the front's own assembly (Frontend._search and
_result) over a real coordinator and shards, against the brute-force oracle of the hedged pair.

The end-to-end REST tests run the tiny models, which are never sure enough of a category to
hedge, so this is where a firing hedge goes through the front's code: the same query terms,
one batch, the merge, and the `hedged` and `candidates` fields.
"""
import asyncio
import functools
from types import SimpleNamespace

import numpy as np

from cluster.rest import Frontend
from coordinator.coordinator import Coordinator
from coordinator.placement import Placement
from coordinator.protocol import LocalShardClient
from models.hedge import hedge_query
from models.pipeline import HEDGE_P, REQUIRED_P, hedge_terms, query_terms
from shards.query import Query, prepare
from shards.shard import Shard, ShardConfig

from ..models.test_hedge import hedged_oracle
from ..shards.helpers import CATS, COLOURS, model_add, random_items

FRONT = Frontend.func_or_class
CFG = ShardConfig(bits=128, hist_bins=8)


class CountingRouter:
    """The coordinator as the front's router, counting the batches the front sends."""

    def __init__(self, coordinator):
        self.coordinator, self.batches = coordinator, []

    async def search_batch(self, queries):
        self.batches.append(len(queries))
        return await self.coordinator.search_batch(queries)


def _front(router, counted=None):
    front = SimpleNamespace(router=router, w_colour=0.4, _given=FRONT._given,
                            metrics=SimpleNamespace(searched=(counted if counted is not None else []).append))
    front._query = functools.partial(FRONT._query, front)
    front._result = functools.partial(FRONT._result, front)
    return front


def _analysis(rng, category_source="auto"):
    read, runner_up = rng.choice(len(CATS), 2, replace=False)
    attrs = [(CATS[read], REQUIRED_P + 0.05), (COLOURS[rng.integers(len(COLOURS))], 0.9)]
    return {"attributes": attrs, "alternatives": [(CATS[runner_up], HEDGE_P + 0.01)],
            "category": CATS[read].split("=")[1], "category_source": category_source,
            "roi": [0, 0, 10, 10], "roi_source": "detector",
            "code": rng.integers(0, 2**63, 2, dtype=np.uint64), "hist": rng.integers(0, 4, 8).astype(float),
            "ms": {"roi": 1.0, "attributes": 1.0, "features": 1.0, "analysis": 2.0}}


def test_a_hedging_photo_gets_the_merged_answer_of_both_searches_in_one_batch(tmp_path):
    rng = np.random.default_rng(5)
    placement = Placement.initial(2)
    def client(name):
        return LocalShardClient(name, Shard(tmp_path / name, CFG))
    coord = Coordinator(tmp_path, placement, {s: client(s) for s in placement.shards}, bits=128, hist_bins=8,
                        make_client=client)
    items: dict = {}
    ids, codes, hists, attrs = random_items(rng, 400, 2, 8, str_ids=True)
    model_add(items, ids, codes, hists, attrs, 8)
    analyses = [_analysis(rng) for _ in range(12)] + [_analysis(rng, "user") for _ in range(4)]
    router = CountingRouter(coord)
    counted = []

    async def run():
        await coord.start()
        await coord.upsert(ids, codes, hists, attrs)
        return await FRONT._search(_front(router, counted), analyses, 6, ("gender=Women",))
    out = asyncio.run(run())
    assert router.batches == [12 + 12 + 4]                       # the 12 hedges ride in the same batch
    assert counted == out                                          # every answer is counted (cluster/metrics.py)
    for a, answer in zip(analyses, out):
        given = a["category"] if a["category_source"] == "user" else None
        q = Query(code=a["code"], hist=a["hist"], k=6, filters=("gender=Women",), w_colour=0.4,
                  **query_terms(a["attributes"], given))
        h = hedge_query(q, hedge_terms(a["attributes"], a["alternatives"], given))
        assert (h is None) == (given is not None)                 # a named category is never hedged
        want = hedged_oracle(items, prepare(q, 128, 8), h and prepare(h, 128, 8))
        assert [(r["id"], r["score"]) for r in answer["results"]] == [(x[0], x[1]) for x in want]
        assert answer["hedged"] == (a["alternatives"][0][0] if h is not None else None)
        both = asyncio.run(coord.search_batch([q] + ([h] if h is not None else [])))
        assert answer["candidates"] == sum(r.candidates for r in both) and not answer["partial"]
        assert all(r["image_url"] == f"/items/{r['id']}/image" for r in answer["results"])
