"""The coordinator's logic against in-process shards (no Ray): merge, relaxation,
partial answers, routing and an online rebalance under a query load."""
import asyncio
import dataclasses
import time

import numpy as np
import pytest

from coordinator.coordinator import Coordinator
from coordinator.merge import global_level, merge_answers, merge_by_full_sort
from coordinator.placement import Placement
from coordinator.protocol import LocalShardClient
from shards.errors import InvalidInput, ShardUnavailable
from shards.oracle import brute_force_search
from shards.shard import Shard, ShardConfig

from ..shards.helpers import model_add, random_items, random_query

CFG = ShardConfig(bits=128, hist_bins=8)


def make(tmp_path, n_shards=3):
    placement = Placement.initial(n_shards)
    clients = {s: LocalShardClient(s, Shard(tmp_path / s, CFG)) for s in placement.shards}
    make_client = lambda s: LocalShardClient(s, Shard(tmp_path / s, CFG))  # noqa: E731
    coord = Coordinator(tmp_path, placement, clients, bits=128, hist_bins=8, make_client=make_client)
    asyncio.run(coord.start())
    return coord


def tuples(result):
    return [(h.id, h.score, h.hamming, h.colour_distance, h.matched) for h in result.hits]


def test_columnar_merge_equals_full_sort_of_hits():
    """merge_answers (the router's) against a full sort of the same answers as Hit objects."""
    rng = np.random.default_rng(3)
    shards = [Shard(None, CFG) for _ in range(3)]
    for j, s in enumerate(shards):
        ids, codes, hists, attrs = random_items(rng, 300, 2, 8, start=1000 * j, str_ids=True)
        s.upsert(ids, codes, hists, attrs, [{"n": i} if i % 2 else None for i in range(len(ids))])
    for _ in range(20):
        qs = [shards[0].prepare(random_query(rng, 2, 8)) for _ in range(int(rng.integers(1, 12)))]
        levels = [int(rng.integers(0, len(q.required) + 1)) for q in qs]
        # the second shard answers some queries in a later round, as a global relaxation does
        later = np.flatnonzero(rng.random(len(qs)) < 0.5)
        first = np.setdiff1d(np.arange(len(qs)), later)
        answers = [s.search_columns(qs, levels) for s in shards]
        redo = shards[1].search_columns([qs[i] for i in later], [levels[i] for i in later])
        parts = [(answers[0], np.arange(len(qs)), np.arange(len(qs))), (answers[1], first, first),
                 (redo, np.arange(len(later)), later), (answers[2], np.arange(len(qs)), np.arange(len(qs)))]
        got = merge_answers(parts, qs)
        per_shard = [a.results(qs) for a in answers]
        for i, q in enumerate(qs):
            want = merge_by_full_sort([list(rs[i].hits) for rs in per_shard], q.k)
            assert got[i] == want


def test_global_level():
    assert global_level([(3, 10), (2, 7)], k=5, n_required=1) == 0
    assert global_level([(1, 10), (2, 7)], k=5, n_required=1) == 1
    assert global_level([(1, 2, 3), (1, 1, 1)], k=50, n_required=2) == 2
    assert global_level([(6,), (1, 1)], k=5, n_required=1) == 0


def test_widened_global_level_reads_exact_totals_only():
    from coordinator.merge import widened_global_level
    counts = [(3, 10, 40), (2, 7, 30)]                          # totals 5, 17, 70
    assert widened_global_level(counts, 0, widen=2, budget=0) == 0
    assert widened_global_level(counts, 0, widen=2, budget=20) == 1
    assert widened_global_level(counts, 0, widen=1, budget=100) == 1     # never past widen
    assert widened_global_level(counts, 0, widen=2, budget=100) == 2
    assert widened_global_level(counts, 1, widen=2, budget=4) == 1       # the k rule's level stays
    assert widened_global_level([(3, 10, 40), (2, 7)], 0, widen=2, budget=100) == 1  # level 2 not known


def test_cluster_equals_oracle_over_all_items(tmp_path):
    rng = np.random.default_rng(1)
    coord = make(tmp_path)
    model = {}
    ids, codes, hists, attrs = random_items(rng, 900, 2, 8, str_ids=True)
    asyncio.run(coord.upsert(ids, codes, hists, attrs))
    model_add(model, ids, codes, hists, attrs, 8)

    async def check():
        queries = [random_query(rng, 2, 8) for _ in range(40)]
        got = await coord.search_batch(queries)
        for q, r in zip(queries, got):
            want, level, _ = brute_force_search(model, coord.prepare(q))
            assert tuples(r) == want
            assert r.level == level and not r.partial
    asyncio.run(check())
    # after growing and shrinking, still the same answers
    asyncio.run(coord.rebalance(5))
    asyncio.run(check())
    asyncio.run(coord.rebalance(2))
    asyncio.run(check())
    assert sum(len(c.shard) for c in coord.clients.values()) == len(model)


class DeadShard(LocalShardClient):
    async def search_batch(self, *a):
        raise RuntimeError("actor died")


class SlowShard(LocalShardClient):
    async def search_batch(self, *a):
        await asyncio.sleep(10)


@pytest.mark.parametrize("broken", [DeadShard, SlowShard])
def test_a_missing_shard_gives_partial_never_a_hang(tmp_path, broken):
    coord = make(tmp_path)
    coord.timeout_s = 0.3
    rng = np.random.default_rng(2)
    ids, codes, hists, attrs = random_items(rng, 300, 2, 8)
    asyncio.run(coord.upsert(ids, codes, hists, attrs))
    bad = coord.placement.shards[1]
    coord.clients[bad] = coord.router.clients[bad] = broken(bad, coord.clients[bad].shard)
    r = asyncio.run(coord.search(random_query(rng, 2, 8)))
    assert r.partial and r.missing == [bad]
    assert all(coord.clients[bad].shard.contains(h.id) is False for h in r.hits)


def test_bad_batches_change_nothing(tmp_path):
    coord = make(tmp_path)
    with pytest.raises(InvalidInput, match="duplicate"):
        asyncio.run(coord.upsert([1, 1], np.zeros((2, 2), np.uint64), np.ones((2, 8)), [[], []]))
    with pytest.raises(InvalidInput):
        asyncio.run(coord.upsert([1, 2], np.zeros((2, 2), np.uint64), np.ones((2, 8)), [[], ["bad"]]))
    assert sum(len(c.shard) for c in coord.clients.values()) == 0


class YieldingShard(LocalShardClient):
    """A local shard that gives the event loop a turn before each call, as a remote one would."""

    async def search_batch(self, *a):
        await asyncio.sleep(0.0005)
        return await super().search_batch(*a)

    async def upsert(self, batch):
        await asyncio.sleep(0.0005)
        return await super().upsert(batch)

    async def export_buckets(self, *a):
        await asyncio.sleep(0.0005)
        return await super().export_buckets(*a)

    async def delete_buckets(self, *a):
        await asyncio.sleep(0.0005)
        return await super().delete_buckets(*a)


def test_rebalance_under_load_sees_each_item_exactly_once(tmp_path, monkeypatch):
    """Queries and writes run while buckets move; every answer is complete and duplicate-free."""
    import coordinator.coordinator
    monkeypatch.setattr(coordinator.coordinator, "MOVE_GROUP", 16)  # many small steps to interleave with
    rng = np.random.default_rng(3)
    coord = make(tmp_path, 2)
    for name in list(coord.clients):
        coord.clients[name] = coord.router.clients[name] = YieldingShard(name, coord.clients[name].shard)
    coord.make_client = lambda s: YieldingShard(s, Shard(tmp_path / s, CFG))
    model = {}
    ids, codes, hists, attrs = random_items(rng, 600, 2, 8)
    asyncio.run(coord.upsert(ids, codes, hists, attrs))
    model_add(model, ids, codes, hists, attrs, 8)
    from shards.query import Query
    everything = Query(code=np.zeros(2, np.uint64), hist=np.ones(8), k=1000)
    failures, seen = [], []

    async def run():
        stop = asyncio.Event()

        async def reader():
            while not stop.is_set():
                before = len(model)
                moving = bool(coord.placement.moving or coord.placement.draining)
                r = await coord.search(everything)     # k=1000 > items: every item, once
                got = [h.id for h in r.hits]
                if moving:
                    seen.append(len(got))
                if len(got) != len(set(got)) or r.partial or not before - 1 <= len(got) <= len(model) + 5:
                    failures.append((before, len(got), len(model), r.partial))
                await asyncio.sleep(0)

        async def writer():
            i = 10_000
            while not stop.is_set() and i < 10_300:  # stay under the reader's k=1000
                new_ids, c, h, a = random_items(rng, 5, 2, 8, start=i)
                await coord.upsert(new_ids, c, h, a)
                model_add(model, new_ids, c, h, a, 8)
                gone = [i - 5] if i > 10_000 else []
                if gone:
                    await coord.delete(gone)
                    model.pop(gone[0])
                i += 5
                await asyncio.sleep(0)

        tasks = [asyncio.create_task(reader()), asyncio.create_task(writer())]
        await coord.rebalance(4)
        await coord.rebalance(3)
        stop.set()
        await asyncio.gather(*tasks)

    asyncio.run(run())
    assert not failures
    assert len(seen) >= 3, "queries did not run while buckets were moving"
    held = sorted((i for c in coord.clients.values() for i in c.shard.ids()), key=str)
    assert held == sorted(model, key=str)          # no copy left behind, nothing lost
    final = asyncio.run(coord.search(everything))
    assert {h.id for h in final.hits} <= set(model)
    assert not coord.placement.moving and not coord.placement.draining


def test_placement_survives_restart(tmp_path):
    coord = make(tmp_path)
    asyncio.run(coord.rebalance(4))
    again = Placement.load(tmp_path)
    assert again.to_json() == coord.placement.to_json()
    assert sorted(again.counts().values()) == [1024] * 4


def test_plan_moves_the_fewest_buckets():
    p = Placement.initial(2)
    shards, moves = p.plan(4)
    assert len(moves) == 2048
    assert {dst for _, _, dst in moves} == {"shard-002", "shard-003"}
    shards, moves = p.plan(2)
    assert moves == []


def test_a_batch_larger_than_a_chunk_gives_the_same_answers(tmp_path):
    """Chunks of 7, 2 in flight: same results, in order, as the oracle; a bad query anywhere fails it all first."""
    rng = np.random.default_rng(5)
    coord = make(tmp_path)
    coord.router.chunk, coord.router.window = 7, 2
    model = {}
    ids, codes, hists, attrs = random_items(rng, 600, 2, 8)
    asyncio.run(coord.upsert(ids, codes, hists, attrs))
    model_add(model, ids, codes, hists, attrs, 8)
    queries = [random_query(rng, 2, 8) for _ in range(40)]
    got = asyncio.run(coord.search_batch(queries))
    assert len(got) == len(queries)
    for q, r in zip(queries, got):
        want, level, _ = brute_force_search(model, coord.prepare(q))
        assert tuples(r) == want and r.level == level
    assert len({r.took_ms for r in got}) == 1  # the whole batch's time, not a chunk's

    calls = []
    for c in coord.router.clients.values():
        c.search_batch = lambda batch, _f=c.search_batch: calls.append(batch) or _f(batch)
    bad = queries[:30] + [dataclasses.replace(random_query(rng, 2, 8), k=0)]
    with pytest.raises(InvalidInput, match="k must be"):
        asyncio.run(coord.search_batch(bad))
    assert calls == []


def test_fan_out_sorts_answers_from_failures_under_one_deadline():
    from coordinator.router import fan_out
    from shards.errors import ShardUnavailable

    async def fine():
        return "answer"

    async def dies():
        raise RuntimeError("actor died")

    async def hangs():
        await asyncio.sleep(10)

    class Wrapped(Exception):  # how Ray hands over an error raised inside an actor
        cause = InvalidInput("bad query")

    async def wrapped():
        raise Wrapped()

    async def bad():
        raise InvalidInput("bad query")

    t0 = time.monotonic()
    ok, failed = asyncio.run(fan_out({"a": fine(), "b": dies(), "c": hangs()}, 0.2))
    assert time.monotonic() - t0 < 2
    assert ok == {"a": "answer"} and set(failed) == {"b", "c"}
    assert all(isinstance(e, ShardUnavailable) for e in failed.values())
    assert "actor died" in str(failed["b"]) and "within" in str(failed["c"])
    for raising in (bad, wrapped):   # bad input is the caller's error, never a missing shard
        with pytest.raises(InvalidInput, match="bad query"):
            asyncio.run(fan_out({"a": fine(), "b": raising()}, 1.0))
    assert asyncio.run(fan_out({}, 1.0)) == ({}, {})


def test_a_widened_query_says_which_tokens_the_budget_let_go_and_which_were_relaxed(tmp_path):
    """100 items over 3 shards: 40 shirts (10 red). Widened answers equal the oracle's."""
    from shards.query import Query
    coord = make(tmp_path)
    attrs = [["articleType=Shirts" if i < 40 else "articleType=Jeans",
              "baseColour=Red" if (i < 10 or i >= 70) else "baseColour=Blue"] for i in range(100)]
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 2**63, (100, 2), dtype=np.uint64)
    asyncio.run(coord.upsert(list(range(100)), codes, np.ones((100, 8)), attrs))
    model = {}
    model_add(model, list(range(100)), codes, np.ones((100, 8)), attrs, 8)

    def ask(budget, k=5):
        q = Query(code=codes[3], hist=np.ones(8), k=k, required=("articleType=Shirts", "baseColour=Red"),
                  widen=1, scan_budget=budget)
        r = asyncio.run(coord.search(q))
        want, level, _ = brute_force_search(model, coord.router.prepare(q))
        assert tuples(r) == [(i, s, h, c, m) for i, s, h, c, m in want] and r.level == level
        return r

    narrow = ask(0.3)                       # 40 shirts pass 30 % of 100: the colour narrows
    assert narrow.level == 0 and narrow.relaxed == () and narrow.widened == ()
    wide = ask(0.5)                         # all 40 shirts fit 50 %: the colour goes
    assert wide.level == 1 and wide.relaxed == () and wide.widened == ("baseColour=Red",)
    assert wide.to_dict()["widened"] == ["baseColour=Red"]
    few = ask(0.3, k=20)                    # 10 red shirts are too few for k: relaxed, not widened
    assert few.level == 1 and few.relaxed == ("baseColour=Red",) and few.widened == ()


def test_a_new_shard_that_never_starts_stops_the_rebalance_before_the_map_names_it(tmp_path):
    """No room for it on the cluster, say: the map is left as it was and queries stay whole."""
    coord = make(tmp_path, 2)
    rng = np.random.default_rng(8)
    ids, codes, hists, attrs = random_items(rng, 100, 2, 8)
    asyncio.run(coord.upsert(ids, codes, hists, attrs))
    before = coord.placement.to_json()
    saved = (tmp_path / "placement.json").read_bytes() if (tmp_path / "placement.json").exists() else None
    retired = []

    class NeverStarts:   # an actor Ray cannot place: every call waits
        def __init__(self, name):
            self.name = name

        def __getattr__(self, method):
            return lambda *a: asyncio.sleep(3600)

    coord.make_client = NeverStarts
    coord.retire_client = retired.append
    coord.write_timeout_s = coord.timeout_s = 0.2
    with pytest.raises(ShardUnavailable, match="did not start, nothing was moved"):
        asyncio.run(coord.rebalance(4))
    assert coord.placement.to_json() == before
    assert ((tmp_path / "placement.json").read_bytes() if (tmp_path / "placement.json").exists() else None) == saved
    assert sorted(retired) == ["shard-002", "shard-003"] and sorted(coord.clients) == ["shard-000", "shard-001"]
    from shards.query import Query
    r = asyncio.run(coord.search(Query(code=np.zeros(2, np.uint64), hist=np.ones(8), k=1000)))
    assert not r.partial and len(r.hits) == 100
