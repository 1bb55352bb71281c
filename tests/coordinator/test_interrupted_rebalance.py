"""A rebalance cut short at every step (the coordinator's process dies): the next
coordinator on the same storage root finishes or undoes the move, and every
acknowledged item is found exactly once, then and after the rebalance is run again."""
import asyncio
import shutil

import numpy as np
import pytest

import coordinator.coordinator
from coordinator.coordinator import Coordinator
from coordinator.placement import Placement
from coordinator.protocol import LocalShardClient
from shards.query import Query
from shards.shard import Shard, ShardConfig

from ..shards.helpers import random_items

CFG = ShardConfig(bits=128, hist_bins=8)
EVERYTHING = Query(code=np.zeros(2, np.uint64), hist=np.ones(8), k=1000)


class Crash(Exception):
    """The coordinator's process dies here: nothing after this point happens."""


class Steps:
    """Counts the durable steps of a rebalance and crashes at step `at`."""

    def __init__(self, at: int):
        self.at, self.n = at, 0

    def tick(self):
        self.n += 1
        if self.n == self.at:
            raise Crash(f"crash at step {self.n}")


class CrashingShard(LocalShardClient):
    """A shard client whose rebalance calls count as steps, before and after they run."""

    def __init__(self, name, shard, steps):
        super().__init__(name, shard)
        self.steps = steps

    async def _step(self, method, *a):
        self.steps.tick()
        out = await getattr(super(), method)(*a)
        self.steps.tick()
        return out

    async def export_buckets(self, *a):
        return await self._step("export_buckets", *a)

    async def upsert(self, batch):
        return await self._step("upsert", batch)

    async def delete_buckets(self, *a):
        return await self._step("delete_buckets", *a)


def open_coordinator(root, steps=None):
    """A coordinator as a restarted process makes one: the saved map, shards reopened from disk."""
    placement = Placement.load(root) or Placement.initial(2)

    def client(name):
        shard = Shard(root / name, CFG)
        return LocalShardClient(name, shard) if steps is None else CrashingShard(name, shard, steps)
    coord = Coordinator(root, placement, {s: client(s) for s in placement.shards}, bits=128, hist_bins=8,
                        make_client=client)
    asyncio.run(coord.start())
    return coord


def indexed_root(root, rng, n):
    """A storage root holding n random items on 2 shards; returns (root, their ids)."""
    ids, codes, hists, attrs = random_items(rng, n, 2, 8)
    coord = open_coordinator(root)
    asyncio.run(coord.upsert(ids, codes, hists, attrs))
    close(coord)
    return root, ids


def close(coord):
    for c in coord.clients.values():
        c.shard.close()


def check_exactly_once(coord, acked):
    r = asyncio.run(coord.search(EVERYTHING))
    got = [h.id for h in r.hits]
    assert not r.partial and len(got) == len(set(got)) and set(got) == acked
    held = [i for name in coord.placement.shards for i in coord.clients[name].shard.ids()]
    assert sorted(held, key=str) == sorted(acked, key=str)     # no stale copy left on any shard


def rebalance_until_crash(root, at, n_shards, monkeypatch):
    steps = Steps(at)
    coord = open_coordinator(root, steps)
    # saving a map version is a step too: a crash just after it is durable, before it is pushed
    save = Placement.save
    monkeypatch.setattr(Placement, "save", lambda self, r: (save(self, r), steps.tick())[0])
    try:
        asyncio.run(coord.rebalance(n_shards))
        crashed = False
    except Exception as exc:   # a shard call's failure reaches the coordinator as ShardUnavailable
        if not isinstance(exc, Crash) and not isinstance(exc.__cause__, Crash):
            raise
        crashed = True
    finally:
        monkeypatch.setattr(Placement, "save", save)
        close(coord)
    return crashed, steps.n


def test_a_rebalance_cut_at_any_step_loses_nothing_and_leaves_no_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(coordinator.coordinator, "MOVE_GROUP", 4096)   # one move per (src, dst): few steps
    rng = np.random.default_rng(5)
    ids, codes, hists, attrs = random_items(rng, 200, 2, 8, str_ids=True)
    at, seen_crash_while_moving = 1, set()
    while True:
        root = tmp_path / f"crash-{at}"
        coord = open_coordinator(root)
        asyncio.run(coord.upsert(ids, codes, hists, attrs))
        close(coord)

        crashed, n_steps = rebalance_until_crash(root, at, 3, monkeypatch)
        saved = Placement.load(root)
        if saved.moving:
            seen_crash_while_moving.add("moving")
        if saved.draining:
            seen_crash_while_moving.add("draining")

        coord = open_coordinator(root)      # the restarted coordinator: start() recovers
        assert not coord.placement.moving and not coord.placement.draining
        check_exactly_once(coord, set(ids))
        # the user runs the rebalance again and it completes from wherever the crash left it
        asyncio.run(coord.rebalance(3))
        assert sorted(coord.placement.counts().values()) == [1365, 1365, 1366]
        check_exactly_once(coord, set(ids))
        close(coord)
        if not crashed:
            break
        at += 1
    assert at > 10, f"the rebalance had only {n_steps} steps to crash at"
    # crashes landed both while buckets were being copied and while stale copies waited to go
    assert seen_crash_while_moving == {"moving", "draining"}


@pytest.mark.parametrize("at", [3, 6])
def test_writes_acknowledged_after_a_crashed_move_are_kept(tmp_path, monkeypatch, at):
    """Writes that reach a coordinator restarted mid-move land where the finished map looks."""
    monkeypatch.setattr(coordinator.coordinator, "MOVE_GROUP", 4096)
    rng = np.random.default_rng(6)
    root, ids = indexed_root(tmp_path / "root", rng, 150)
    crashed, _ = rebalance_until_crash(root, at, 3, monkeypatch)
    assert crashed
    coord = open_coordinator(root)
    more, c2, h2, a2 = random_items(rng, 80, 2, 8, start=1000)
    asyncio.run(coord.upsert(more, c2, h2, a2))
    asyncio.run(coord.delete(ids[:20]))
    acked = set(ids[20:]) | set(more)
    check_exactly_once(coord, acked)
    asyncio.run(coord.rebalance(3))
    check_exactly_once(coord, acked)
    close(coord)


def test_a_crashed_move_whose_shard_is_still_down_leaves_the_rest_serving(tmp_path, monkeypatch):
    """The coordinator restarts while the move's new shard is away too (the same node died):
    it starts all the same, every item is found once, and the next start finishes the job."""
    from shards.errors import ShardUnavailable
    monkeypatch.setattr(coordinator.coordinator, "MOVE_GROUP", 4096)
    root, ids = indexed_root(tmp_path / "root", np.random.default_rng(9), 150)
    for at in range(1, 20):      # the first crash that leaves a copy half-made
        shutil.rmtree(tmp_path / "try", ignore_errors=True)
        shutil.copytree(root, tmp_path / "try")
        crashed, _ = rebalance_until_crash(tmp_path / "try", at, 3, monkeypatch)
        if crashed and Placement.load(tmp_path / "try").moving:
            break
    root = tmp_path / "try"
    away = sorted(set(Placement.load(root).moving.values()))

    class Away:
        def __init__(self, name):
            self.name = name

        def __getattr__(self, method):
            async def unavailable(*a):
                raise ShardUnavailable(self.name, "its node is down")
            return unavailable

    placement = Placement.load(root)
    clients = {s: Away(s) if s in away else LocalShardClient(s, Shard(root / s, CFG)) for s in placement.shards}
    coord = Coordinator(root, placement, clients, bits=128, hist_bins=8)
    asyncio.run(coord.start())                                 # does not raise
    stats = asyncio.run(coord.stats())
    assert "its node is down" in stats["recovery_error"] and stats["unavailable"] == away
    r = asyncio.run(coord.search(EVERYTHING))
    got = [h.id for h in r.hits]
    assert r.partial and r.missing == away and sorted(got) == sorted(ids)   # each item once, from its owner
    for c in clients.values():
        if isinstance(c, LocalShardClient):
            c.shard.close()
    coord = open_coordinator(root)                             # the node is back: recovery finishes
    assert not coord.placement.moving and coord.recovery_error is None
    check_exactly_once(coord, set(ids))
    asyncio.run(coord.rebalance(3))
    check_exactly_once(coord, set(ids))
    close(coord)
