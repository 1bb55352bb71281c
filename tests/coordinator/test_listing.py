"""Paging through the catalog (GET /items): each item exactly once, in a stable order, across rebalances."""
import asyncio

import numpy as np
import pytest

from coordinator.listing import encode_cursor, every_item, merge_pages, page_end, parse_cursor
from coordinator.protocol import LocalShardClient
from shards.codes import bucket_of_keys, id_key
from shards.errors import InvalidInput
from shards.shard import Shard

from ..shards.helpers import CATS, COLOURS, GENDERS, random_items
from .test_coordinator import CFG, YieldingShard, make


def oracle_page(items: dict, buckets, n_buckets, after, limit, required=()):
    """Slow and plain: every item's (bucket, key), filtered and fully sorted in Python."""
    rows = []
    for item_id, (attrs, meta) in items.items():
        key = id_key(item_id)
        b = int(bucket_of_keys(np.array([key], np.uint64), n_buckets)[0])
        if b in buckets and (after is None or (b, key) > tuple(after)) and set(required) <= set(attrs):
            rows.append({"id": item_id, "bucket": b, "key": key, "attributes": sorted(attrs), "meta": meta})
    return sorted(rows, key=lambda r: (r["bucket"], r["key"]))[:limit]


def test_a_shard_page_equals_a_full_sort_on_random_input(tmp_path):
    rng = np.random.default_rng(11)
    shard = Shard(tmp_path / "s", CFG)
    items = {}
    for start in range(0, 900, 300):   # several writes, string and int ids, some deleted and replaced
        ids, codes, hists, attrs = random_items(rng, 300, 2, 8, start=start, str_ids=True)
        metas = [{"title": f"t{i}"} for i in ids]
        shard.upsert(ids, codes, hists, attrs, metas)
        items.update({i: (a, m) for i, a, m in zip(ids, attrs, metas)})
        gone = [ids[j] for j in rng.choice(300, 40, replace=False)]
        shard.delete(gone)
        for g in gone:
            items.pop(g)
    assert len(shard) == len(items)
    for n_buckets in (1, 16, 4096):
        for _ in range(30):
            buckets = set(rng.choice(n_buckets, rng.integers(1, n_buckets + 1), replace=False).tolist())
            after = None
            if rng.random() < 0.7:
                some = list(items)[rng.integers(len(items))]
                key = id_key(some)
                after = (int(bucket_of_keys(np.array([key], np.uint64), n_buckets)[0]), key)
                if rng.random() < 0.3:    # a position between items
                    after = (int(rng.integers(n_buckets)), int(rng.integers(0, 2**63)))
            limit = int(rng.choice([1, 2, 7, 50, 10_000]))
            pool = CATS + COLOURS + GENDERS
            required = tuple(dict.fromkeys(pool[j] for j in rng.integers(0, len(pool), rng.integers(0, 3))))
            got = shard.list_items(sorted(buckets), n_buckets, after, limit, required)
            assert got == oracle_page(items, buckets, n_buckets, after, limit, required)


def test_the_page_ends_at_the_limit_th_position_and_says_when_there_is_more():
    a = (np.array([0, 2]), np.array([5, 1], np.uint64))
    b = (np.array([0, 1]), np.array([9, 0], np.uint64))
    assert page_end({"a": a, "b": b}, 3) == ((1, 0), True, ["a", "b"])
    assert page_end({"a": a, "b": b}, 10) == ((2, 1), False, ["a", "b"])
    assert page_end({"a": a, "b": (np.zeros(0), np.zeros(0))}, 2) == ((2, 1), True, ["a"])   # a filled its answer
    assert page_end({"a": a, "b": b}, 1) == ((0, 5), True, ["a"])
    assert page_end({"a": (np.zeros(0), np.zeros(0))}, 5) == (None, False, [])


def test_merge_keeps_order_and_ends_early_when_writes_landed_between_the_rounds():
    a = [{"bucket": 0, "key": 5}, {"bucket": 2, "key": 1}]
    b = [{"bucket": 0, "key": 9}, {"bucket": 1, "key": 0}]
    items, nxt = merge_pages([a, b], 4, (2, 1), True)
    assert [(i["bucket"], i["key"]) for i in items] == [(0, 5), (0, 9), (1, 0), (2, 1)] and nxt == encode_cursor(2, 1)
    assert merge_pages([a, b], 4, (2, 1), False)[1] is None
    items, nxt = merge_pages([a, b], 3, (2, 1), True)      # one more than counted: the page ends at its third
    assert len(items) == 3 and parse_cursor(nxt, 4) == (1, 0)
    # a shard that stopped at the limit may hold items before `until`: the page ends at its last item
    items, nxt = merge_pages([a + [{"bucket": 3, "key": 0}], []], 3, (3, 5), True)
    assert len(items) == 3 and nxt == encode_cursor(3, 0)
    assert merge_pages([[], []], 5, (3, 7), True) == ([], encode_cursor(3, 7))   # all deleted meanwhile
    assert merge_pages([], 5, None, False) == ([], None)


@pytest.mark.parametrize("bad", ["x", "3", "3.", ".ff", "-1.0", "16.0", "3.zz", "3.1" + "0" * 16, "3.+1", "3. 1"])
def test_a_bad_cursor_is_refused(bad):
    with pytest.raises(InvalidInput, match="cursor"):
        parse_cursor(bad, 16)


def page_through(coord, limit):
    """Every page from the first to the last: the ids, in order."""
    return [it["id"] for it in every_item(lambda cursor, n: asyncio.run(coord.list_items(cursor, n)), limit)]


def test_pages_hold_every_item_once_with_its_attributes_and_meta(tmp_path):
    rng = np.random.default_rng(5)
    coord = make(tmp_path, 3)
    ids, codes, hists, attrs = random_items(rng, 500, 2, 8, str_ids=True)
    metas = [{"title": f"item {i}"} for i in ids]
    asyncio.run(coord.upsert(ids, codes, hists, attrs, metas))
    for limit in (1, 7, 100, 500, 10_000):
        listed = page_through(coord, limit)
        assert sorted(listed, key=str) == sorted(ids, key=str), limit
    first = asyncio.run(coord.list_items(None, 10))["items"]
    for it in first:
        got = asyncio.run(coord.get(it["id"]))
        assert it == {"id": got["id"], "attributes": got["attributes"], "meta": got["meta"]}
    # only the items that carry the required tokens, each once, paged as the whole catalog is
    cat, colour = CATS[0], COLOURS[0]
    for required in ((cat,), (colour,), (cat, colour)):
        listed, cursor = [], None
        while True:
            page = asyncio.run(coord.list_items(cursor, 3, required))
            listed += [it["id"] for it in page["items"]]
            assert all(set(required) <= set(it["attributes"]) for it in page["items"])
            if (cursor := page["next_cursor"]) is None:
                break
        want = [i for i, a in zip(ids, attrs) if set(required) <= set(a)]
        assert sorted(listed, key=str) == sorted(want, key=str) and want, required
    with pytest.raises(InvalidInput, match="token"):
        asyncio.run(coord.list_items(None, 10, ("not a token",)))
    # the order is the catalog's, not a shard's: the same after a rebalance
    before = page_through(coord, 50)
    asyncio.run(coord.rebalance(5))
    assert page_through(coord, 50) == before


@pytest.mark.parametrize("limit", [0, -1, 10_001, 2.5, True, "10"])
def test_a_bad_limit_is_refused(tmp_path, limit):
    coord = make(tmp_path, 2)
    with pytest.raises(InvalidInput, match="limit"):
        asyncio.run(coord.list_items(None, limit))


class SlowListing(YieldingShard):
    """Lists after a pause, as a remote shard would: a rebalance step may run meanwhile."""

    async def list_items(self, *a):
        await asyncio.sleep(0.02)
        return await super().list_items(*a)


@pytest.mark.parametrize("rereads", [3, 0])   # 0: every page is read under its buckets' locks
def test_paging_while_buckets_move_lists_each_item_exactly_once(tmp_path, monkeypatch, rereads):
    import coordinator.coordinator
    monkeypatch.setattr(coordinator.coordinator, "MOVE_GROUP", 16)   # many small steps to interleave with
    monkeypatch.setattr(coordinator.coordinator, "LIST_REREADS", rereads)
    rng = np.random.default_rng(8)
    coord = make(tmp_path, 2)
    for name in list(coord.clients):
        coord.clients[name] = coord.router.clients[name] = SlowListing(name, coord.clients[name].shard)
    coord.make_client = lambda s: SlowListing(s, Shard(tmp_path / s, CFG))
    ids, codes, hists, attrs = random_items(rng, 800, 2, 8)
    asyncio.run(coord.upsert(ids, codes, hists, attrs))
    listings, during = [], []

    async def run():
        stop = asyncio.Event()

        async def lister():
            while not stop.is_set():
                listed, cursor, moved = [], None, False
                while True:
                    moved |= bool(coord.placement.moving or coord.placement.draining)
                    page = await coord.list_items(cursor, 25)
                    listed += [it["id"] for it in page["items"]]
                    if (cursor := page["next_cursor"]) is None:
                        break
                listings.append(listed)
                during.append(moved)

        async def writer():   # new items (ids from 10,000) arrive throughout
            i = 10_000
            while not stop.is_set():
                new_ids, c, h, a = random_items(rng, 3, 2, 8, start=i)
                await coord.upsert(new_ids, c, h, a)
                i += 3
                await asyncio.sleep(0.001)

        tasks = [asyncio.create_task(lister()), asyncio.create_task(writer())]
        await coord.rebalance(4)
        await coord.rebalance(3)
        stop.set()
        await asyncio.gather(*tasks)

    asyncio.run(run())
    assert sum(during) >= 2, "no listing ran while buckets moved"
    for listed in listings:
        assert len(listed) == len(set(listed)), "an item listed twice"
        assert set(ids) <= set(listed), f"{len(set(ids) - set(listed))} items missed"


class WritesBetweenRounds(LocalShardClient):
    """Items land in this shard between the two rounds of every page, before where the page ends."""

    def __init__(self, name, shard, rng):
        super().__init__(name, shard)
        self.rng, self.next_id = rng, 1_000_000

    async def list_items(self, buckets, n_buckets, after, limit, required=(), until=None):
        wanted, new = set(buckets), []
        while len(new) < 5:
            self.next_id += 1
            key = id_key(self.next_id)
            pos = (int(bucket_of_keys(np.array([key], np.uint64), n_buckets)[0]), key)
            if pos[0] in wanted and (after is None or pos > tuple(after)) and (until is None or pos <= until):
                new.append(self.next_id)
            if self.next_id % 100_000 == 0:
                break      # no room before `until`
        if new:
            ids, codes, hists, attrs = random_items(self.rng, len(new), 2, 8)
            self.shard.upsert(new, codes, hists, attrs)
        return await super().list_items(buckets, n_buckets, after, limit, required, until)


@pytest.mark.parametrize("shards", [1, 3])
def test_items_written_between_the_two_rounds_never_hide_an_older_one(tmp_path, shards):
    rng = np.random.default_rng(3)
    coord = make(tmp_path, shards)
    ids, codes, hists, attrs = random_items(rng, 300, 2, 8)
    asyncio.run(coord.upsert(ids, codes, hists, attrs))
    for name in list(coord.clients):
        coord.clients[name] = WritesBetweenRounds(name, coord.clients[name].shard, rng)
    listed = page_through(coord, 25)
    assert len(listed) == len(set(listed)) and set(ids) <= set(listed)
