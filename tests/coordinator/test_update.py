"""Coordinator.update: new tokens or metadata for an item, its code and colour kept, atomic against other writes."""
import asyncio

import numpy as np
import pytest

from shards.errors import InvalidInput, NotFound
from shards.oracle import brute_force_search
from shards.query import prepare

from ..shards.helpers import CATS, COLOURS, random_items, random_query
from .test_coordinator import YieldingShard, make


def catalog(tmp_path, n=200):
    coord = make(tmp_path, 3)
    ids, codes, hists, attrs = random_items(np.random.default_rng(4), n, 2, 8, str_ids=True)
    metas = [{"title": f"item {i}"} for i in ids]
    asyncio.run(coord.upsert(ids, codes, hists, attrs, metas))
    model = {i: (asyncio.run(coord.get(i))["code"], asyncio.run(coord.get(i))["hist"], set(a))
             for i, a in zip(ids, attrs)}
    return coord, ids, model


def test_searches_see_the_new_tokens_as_the_oracle_does(tmp_path):
    coord, ids, model = catalog(tmp_path)
    rng = np.random.default_rng(9)
    for item_id in ids[:30]:
        new = sorted({CATS[rng.integers(len(CATS))], COLOURS[rng.integers(len(COLOURS))]})
        before = asyncio.run(coord.get(item_id))
        got = asyncio.run(coord.update(item_id, new, {"title": f"renamed {item_id}"}))
        assert got["attributes"] == new and got["meta"] == {"title": f"renamed {item_id}"}
        assert np.array_equal(got["code"], before["code"]) and np.array_equal(got["hist"], before["hist"])
        model[item_id] = (model[item_id][0], model[item_id][1], set(new))
    for _ in range(40):
        q = random_query(rng, 2, 8)
        want = brute_force_search(model, prepare(q, 128, 8))[0]
        got = asyncio.run(coord.search(q))
        assert [(h.id, h.score) for h in got.hits] == [(h[0], h[1]) for h in want]
    assert sum(len(c.shard) for c in coord.clients.values()) == len(ids)    # replaced, not added


def test_a_title_alone_keeps_the_tokens(tmp_path):
    coord, ids, model = catalog(tmp_path, 20)
    got = asyncio.run(coord.update(ids[3], meta={"title": "new title"}))
    assert set(got["attributes"]) == model[ids[3]][2] and got["meta"]["title"] == "new title"


@pytest.mark.parametrize("attributes, meta, error", [
    (None, None, "nothing to change"), ([], {}, None), ("articleType=c1", None, "list of tokens"),
    (["articleType=c1", "not a token"], None, "token"), (None, "title", "object"),
    (None, {"title": "x" * 5000}, "title")])
def test_bad_changes_are_refused_and_change_nothing(tmp_path, attributes, meta, error):
    coord, ids, _ = catalog(tmp_path, 20)
    before = asyncio.run(coord.get(ids[0]))
    if error is None:     # an empty list is a valid change: the item keeps no token
        assert asyncio.run(coord.update(ids[0], attributes, meta))["attributes"] == []
        return
    with pytest.raises(InvalidInput, match=error):
        asyncio.run(coord.update(ids[0], attributes, meta))
    after = asyncio.run(coord.get(ids[0]))
    assert after["attributes"] == before["attributes"] and after["meta"] == before["meta"]
    with pytest.raises(NotFound):
        asyncio.run(coord.update("no-such-item", ["articleType=c1"]))


def test_a_move_in_progress_gets_the_change_on_both_shards(tmp_path):
    coord, ids, _ = catalog(tmp_path, 60)
    item = ids[7]
    b = int(coord.placement.buckets_of([item])[0])
    owner = coord.placement.owner[b]
    dst = next(s for s in coord.placement.shards if s != owner)
    asyncio.run(coord._commit(moving={b: dst}))       # as step 1 of a rebalance leaves it
    asyncio.run(coord.update(item, ["articleType=c2", "gender=Women"]))
    for shard in (owner, dst):
        assert coord.clients[shard].shard.get(item)["attributes"] == ["articleType=c2", "gender=Women"]


class SlowGet(YieldingShard):
    """A read's answer takes a while to come back, as a remote shard's does: another write may land meanwhile."""

    async def get(self, item_id):
        got = await super().get(item_id)
        await asyncio.sleep(0.005)
        return got


def test_an_upsert_racing_an_update_is_never_lost(tmp_path):
    """The update's read and write hold the bucket's lock: an upsert that lands in between would
    otherwise be written over with the code read before it."""
    coord, ids, _ = catalog(tmp_path, 30)
    for name in list(coord.clients):
        coord.clients[name] = coord.router.clients[name] = SlowGet(name, coord.clients[name].shard)
    item = ids[5]
    new_code = np.full((1, 2), 12345, np.uint64)

    async def race():
        update = asyncio.create_task(coord.update(item, ["articleType=c3"]))
        await asyncio.sleep(0.001)                   # the update is reading
        await coord.upsert([item], new_code, np.ones((1, 8)), [["articleType=c0"]])
        await update
    asyncio.run(race())
    got = asyncio.run(coord.get(item))
    assert np.array_equal(got["code"], new_code[0])   # the upsert's code survived the update
    assert got["attributes"] in (["articleType=c0"], ["articleType=c3"])
