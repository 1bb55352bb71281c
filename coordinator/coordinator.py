"""The coordinator: routes writes by bucket, fans queries out, merges, relaxes, rebalances.

Query path: validate once, send the whole batch to every shard in one round (all
calls submitted, then awaited together, each under a timeout), merge each
query's top-k (score, then id key). If the shards together have fewer than k
candidates, ask again at the least relaxation level that gives k (one more
round at most). A shard that fails or times out is named in `missing` and the
answer says `partial: true`.

Write path: an item's bucket picks its owner shard (and, while the bucket moves,
its destination too); the write is acknowledged once every target has it durable.

Rebalance: per group of buckets with the same (src, dst): mark them moving (writes
now reach both), copy them under their bucket locks, switch owners in a new map
version, wait for queries that used the old map, then delete src's copies.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from shards.codes import as_codes, check_token, id_key, id_keys, quantize_hists
from shards.errors import FashionSearchError, InvalidInput, NotFound, ShardUnavailable
from shards.query import MAX_K, Hit, PreparedQuery, Query, prepare

from .merge import global_level, merge_topk
from .placement import Placement
from .protocol import ShardClient

MOVE_GROUP = 256  # buckets copied per step of a rebalance


@dataclass
class SearchResult:
    hits: list[Hit]
    relaxed: tuple[str, ...]
    level: int
    candidates: int
    partial: bool = False
    missing: list[str] = field(default_factory=list)
    took_ms: float = 0.0

    def to_dict(self) -> dict:
        return {"hits": [h.to_dict() for h in self.hits], "relaxed": list(self.relaxed),
                "level": self.level, "candidates": self.candidates, "partial": self.partial,
                "missing": self.missing, "took_ms": self.took_ms}


class Coordinator:
    def __init__(self, root: str | Path, placement: Placement, clients: dict[str, ShardClient], *,
                 bits: int, hist_bins: int, timeout_s: float = 5.0,
                 make_client: Callable[[str], ShardClient] | None = None,
                 retire_client: Callable[[str], object] | None = None):
        self.root = Path(root)
        self.placement = placement
        self.clients = clients
        self.bits, self.hist_bins = bits, hist_bins
        self.timeout_s = timeout_s
        self.make_client = make_client
        self.retire_client = retire_client
        self.bucket_locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.in_flight: dict[int, int] = defaultdict(int)   # map version -> queries running
        self.rebalance_lock = asyncio.Lock()

    # ------------------------------------------------------------ calls
    async def _call(self, name: str, coro, timeout: float | None = None):
        try:
            return await asyncio.wait_for(coro, timeout or self.timeout_s)
        except asyncio.TimeoutError as exc:
            raise ShardUnavailable(name, f"no answer within {timeout or self.timeout_s:.1f} s") from exc
        except FashionSearchError:
            raise
        except Exception as exc:  # a dead actor, a lost node: translated at this boundary
            raise ShardUnavailable(name, f"{type(exc).__name__}: {exc}") from exc

    async def _fan_out(self, calls: dict[str, object]) -> tuple[dict, dict]:
        """Await every call together; returns (answers, failures) by shard name."""
        names = list(calls)
        results = await asyncio.gather(*(self._call(n, calls[n]) for n in names), return_exceptions=True)
        ok, failed = {}, {}
        for n, r in zip(names, results):
            if isinstance(r, ShardUnavailable):
                failed[n] = r
            elif isinstance(r, BaseException):
                raise r
            else:
                ok[n] = r
        return ok, failed

    # ------------------------------------------------------------ queries
    def prepare(self, query: Query) -> PreparedQuery:
        return prepare(query, self.bits, self.hist_bins, MAX_K)

    async def search(self, query: Query | PreparedQuery) -> SearchResult:
        return (await self.search_batch([query]))[0]

    async def search_batch(self, queries) -> list[SearchResult]:
        t0 = time.perf_counter()
        qs = [q if isinstance(q, PreparedQuery) else self.prepare(q) for q in queries]
        if not qs:
            return []
        placement = self.placement
        version = placement.version
        self.in_flight[version] += 1
        try:
            answers, failed = await self._search_round(placement, qs, [0] * len(qs))
            levels = []
            for i, q in enumerate(qs):
                counts = [a[i].counts for a in answers.values()]
                levels.append(global_level(counts, q.k, len(q.required)) if q.required else 0)
            again = [i for i, lv in enumerate(levels) if lv > 0]
            if again:  # global relaxation: one more round for the queries that need it
                more, failed2 = await self._search_round(placement, [qs[i] for i in again],
                                                         [levels[i] for i in again])
                failed.update(failed2)
                for name in list(answers):
                    if name not in more:
                        continue
                    for j, i in enumerate(again):
                        answers[name][i] = more[name][j]
        finally:
            self.in_flight[version] -= 1
        missing = sorted(failed)
        took = (time.perf_counter() - t0) * 1e3
        out = []
        for i, q in enumerate(qs):
            rs = [a[i] for n, a in answers.items() if n not in failed]
            hits = merge_topk([list(r.hits) for r in rs], q.k)
            out.append(SearchResult(hits=hits, relaxed=q.relaxed(levels[i]), level=levels[i],
                                    candidates=sum(r.counts[min(levels[i], len(r.counts) - 1)] for r in rs),
                                    partial=bool(missing), missing=missing, took_ms=took))
        return out

    async def _search_round(self, placement: Placement, qs, levels):
        excl = placement.exclusions()
        calls = {name: self.clients[name].search_batch(
                     qs, levels, (placement.n_buckets, excl.get(name, [])))
                 for name in placement.shards}
        answers, failed = await self._fan_out(calls)
        return {n: list(a) for n, a in answers.items()}, failed

    # ------------------------------------------------------------ writes
    def validate_batch(self, ids, codes, hists, attributes, metas=None) -> dict:
        """Check a whole batch before any shard sees it (shards check again)."""
        ids = list(ids)
        if not ids:
            raise InvalidInput("an upsert batch needs at least one item")
        keys = id_keys(ids)
        if len(np.unique(keys)) != len(ids):
            raise InvalidInput("duplicate ids in an upsert batch")
        codes = as_codes(codes, self.bits, len(ids))
        qh = quantize_hists(hists, self.hist_bins, len(ids))
        attributes = list(attributes)
        if len(attributes) != len(ids):
            raise InvalidInput(f"expected {len(ids)} attribute lists, got {len(attributes)}")
        for toks in attributes:
            if isinstance(toks, str):
                raise InvalidInput(f"attributes of an item are a list of tokens, got {toks!r}")
            for t in toks:
                check_token(t)
        metas = list(metas) if metas is not None else [{} for _ in ids]
        if len(metas) != len(ids):
            raise InvalidInput(f"expected {len(ids)} metadata entries, got {len(metas)}")
        return {"ids": ids, "codes": codes, "hists": qh, "attributes": attributes, "metas": metas,
                "quantised": True}

    async def upsert(self, ids, codes, hists, attributes, metas=None) -> int:
        batch = self.validate_batch(ids, codes, hists, attributes, metas)
        return await self._write_batch(batch)

    async def upsert_prepared(self, batch: dict) -> int:
        return await self._write_batch(batch)

    async def _write_batch(self, batch: dict) -> int:
        buckets = self.placement.buckets_of(batch["ids"])
        async with self._locks(buckets):
            placement = self.placement
            per_shard: dict[str, list[int]] = defaultdict(list)
            for i, b in enumerate(buckets.tolist()):
                for s in placement.write_targets(b):
                    per_shard[s].append(i)
            calls = {s: self.clients[s].upsert(_take(batch, idx)) for s, idx in per_shard.items()}
            _, failed = await self._fan_out(calls)
        if failed:
            raise next(iter(failed.values()))
        return len(batch["ids"])

    async def delete(self, ids) -> int:
        ids = list(ids)
        keys = id_keys(ids)
        if len(set(keys.tolist())) != len(ids):
            raise InvalidInput("duplicate ids in a delete batch")
        buckets = self.placement.buckets_of(ids)
        async with self._locks(buckets):
            placement = self.placement
            per_shard: dict[str, list] = defaultdict(list)
            owners: dict[str, int] = defaultdict(int)
            for item_id, b in zip(ids, buckets.tolist()):
                for s in placement.write_targets(b):
                    per_shard[s].append(item_id)
                owners[placement.owner[b]] += 0
            answers, failed = await self._fan_out({s: self.clients[s].delete(v) for s, v in per_shard.items()})
        if failed:
            raise next(iter(failed.values()))
        return sum(n for s, n in answers.items() if s in owners)

    async def get(self, item_id) -> dict:
        b = int(self.placement.buckets_of([item_id])[0])
        owner = self.placement.owner[b]
        return await self._call(owner, self.clients[owner].get(item_id))

    def _locks(self, buckets):
        """Hold the locks of the buckets that are moving (others need none)."""
        moving = sorted({int(b) for b in np.unique(buckets)} & set(self.placement.moving))
        return _MultiLock([self.bucket_locks[b] for b in moving])

    # ------------------------------------------------------------ rebalancing
    async def rebalance(self, n_shards: int, on_progress: Callable[[int, int], None] | None = None) -> dict:
        """Resize to n_shards, moving buckets online. Returns what was moved."""
        async with self.rebalance_lock:
            t0 = time.perf_counter()
            await self.recover()
            new_shards, moves = self.placement.plan(n_shards)
            for s in new_shards:
                if s not in self.clients:
                    if self.make_client is None:
                        raise InvalidInput("this coordinator cannot create shards")
                    self.clients[s] = self.make_client(s)
            if set(new_shards) - set(self.placement.shards):
                self._commit(shards=sorted(set(self.placement.shards) | set(new_shards)))
            groups: dict[tuple[str, str], list[int]] = defaultdict(list)
            for b, src, dst in moves:
                groups[(src, dst)].append(b)
            moved_items, done = 0, 0
            for (src, dst), buckets in groups.items():
                for i in range(0, len(buckets), MOVE_GROUP):
                    part = buckets[i: i + MOVE_GROUP]
                    moved_items += await self._move(part, src, dst)
                    done += len(part)
                    if on_progress:
                        on_progress(done, len(moves))
            removed = [s for s in self.placement.shards if s not in new_shards]
            self._commit(shards=new_shards)
            for s in removed:
                self.clients.pop(s, None)
                if self.retire_client:
                    self.retire_client(s)
            return {"shards": new_shards, "moved_buckets": len(moves), "moved_items": moved_items,
                    "removed_shards": removed, "version": self.placement.version,
                    "seconds": time.perf_counter() - t0}

    async def _move(self, buckets: list[int], src: str, dst: str) -> int:
        nb = self.placement.n_buckets
        locks = _MultiLock([self.bucket_locks[b] for b in buckets])
        async with locks:
            self._commit(moving={**self.placement.moving, **{b: dst for b in buckets}})
            batch = await self._call(src, self.clients[src].export_buckets(buckets, nb), 60)
            if batch["ids"]:
                batch["quantised"] = True
                await self._call(dst, self.clients[dst].upsert(batch), 60)
            owner = list(self.placement.owner)
            for b in buckets:
                owner[b] = dst
            moving = {b: s for b, s in self.placement.moving.items() if b not in buckets}
            self._commit(owner=owner, moving=moving,
                         draining={**self.placement.draining, **{b: src for b in buckets}})
        await self._wait_for_older_queries(self.placement.version)
        await self._call(src, self.clients[src].delete_buckets(buckets, nb), 60)
        self._commit(draining={b: s for b, s in self.placement.draining.items() if b not in buckets})
        return len(batch["ids"])

    async def recover(self) -> None:
        """Finish or undo a rebalance that a crash interrupted (idempotent)."""
        nb = self.placement.n_buckets
        by_dst: dict[str, list[int]] = defaultdict(list)
        for b, dst in self.placement.moving.items():
            by_dst[dst].append(b)
        for dst, buckets in by_dst.items():   # an unfinished copy: drop it, the owner still has all
            await self._call(dst, self.clients[dst].delete_buckets(buckets, nb), 60)
        if by_dst:
            self._commit(moving={})
        by_src: dict[str, list[int]] = defaultdict(list)
        for b, src in self.placement.draining.items():
            by_src[src].append(b)
        for src, buckets in by_src.items():   # a finished copy: the stale one goes
            await self._call(src, self.clients[src].delete_buckets(buckets, nb), 60)
        if by_src:
            self._commit(draining={})

    async def _wait_for_older_queries(self, version: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while any(n > 0 for v, n in self.in_flight.items() if v < version):
            if time.monotonic() > deadline:
                break  # a query stuck that long has timed out on its own side
            await asyncio.sleep(0.001)

    def _commit(self, **changes) -> None:
        """A new map version, durable before anyone acts on it."""
        d = self.placement.to_json()
        new = Placement.from_json(d)
        for k, v in changes.items():
            setattr(new, k, v)
        new.version = self.placement.version + 1
        new.save(self.root)
        self.placement = new

    # ------------------------------------------------------------ admin
    async def stats(self) -> dict:
        answers, failed = await self._fan_out({n: self.clients[n].stats() for n in self.placement.shards})
        return {"version": self.placement.version, "n_buckets": self.placement.n_buckets,
                "buckets_per_shard": self.placement.counts(),
                "items": sum(a["items"] for a in answers.values()),
                "shards": {n: {"items": a["items"], "bytes": a["bytes"], "warnings": a["warnings"]}
                           for n, a in answers.items()},
                "unavailable": sorted(failed), "moving": len(self.placement.moving)}


def _take(batch: dict, idx: list[int]) -> dict:
    return {"ids": [batch["ids"][i] for i in idx], "codes": batch["codes"][idx], "hists": batch["hists"][idx],
            "attributes": [batch["attributes"][i] for i in idx], "metas": [batch["metas"][i] for i in idx],
            "quantised": batch.get("quantised", False)}


class _MultiLock:
    """Acquire several asyncio locks in a fixed order (no deadlock), release all."""

    def __init__(self, locks):
        self.locks = locks

    async def __aenter__(self):
        for lock in self.locks:
            await lock.acquire()

    async def __aexit__(self, *exc):
        for lock in reversed(self.locks):
            lock.release()


__all__ = ["Coordinator", "SearchResult", "NotFound", "id_key"]
