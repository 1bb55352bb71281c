"""The coordinator: the write path, the placement map and rebalancing (reads: router.py).

Write path: an item's bucket picks its owner shard (and, while the bucket moves,
its destination too); the write is acknowledged once every target has it
durable. A write holds the locks of its buckets, so a bucket's copy during a
move never races a write to it.

Rebalance, per group of buckets with the same (src, dst):
  1. map version v1: the buckets are `moving`; dst hides them; writes reach src and dst;
  2. copy them from src to dst under their bucket locks;
  3. map version v2: dst owns them and shows them, src hides its stale copies (`draining`);
  4. delete src's copies; map version v3.
Each version is saved (atomically, fsync'd) before it is pushed to the shards, and
a shard restarted mid-way reads its view from the saved map. Queries whose shard
answers straddle two versions are asked again by the router, so every query sees
each item exactly once throughout.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from shards.codes import as_codes, check_token, id_keys, quantize_hists
from shards.errors import InvalidInput, ShardUnavailable
from shards.query import PreparedQuery, Query
from shards.shard import MAX_LIST

from .listing import merge_pages, page_end, parse_cursor
from .placement import Placement
from .protocol import ShardClient
from .router import Router, SearchResult, call, fan_out

MOVE_GROUP = 256  # buckets copied per step of a rebalance
LIST_REREADS = 3  # times a page is read again while its buckets change owner, before it takes their locks


class Coordinator:
    def __init__(self, root: str | Path, placement: Placement, clients: dict[str, ShardClient], *,
                 bits: int, hist_bins: int, timeout_s: float = 5.0, write_timeout_s: float = 120.0,
                 make_client: Callable[[str], ShardClient] | None = None,
                 retire_client: Callable[[str], object] | None = None):
        self.root = Path(root)
        self.placement = placement
        self.clients = clients
        self.bits, self.hist_bins = bits, hist_bins
        self.timeout_s = timeout_s
        self.write_timeout_s = write_timeout_s   # a shard may be folding its log into a snapshot
        self.make_client = make_client
        self.retire_client = retire_client
        self.bucket_locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.rebalance_lock = asyncio.Lock()
        self.recovery_error: str | None = None   # an interrupted rebalance start() could not finish yet
        self.router = Router({n: clients[n] for n in placement.shards}, placement.version, bits=bits,
                             hist_bins=hist_bins, timeout_s=timeout_s)

    async def start(self) -> None:
        """Finish an interrupted rebalance, then give every shard its view of the map.

        A shard that recovery needs but cannot reach (its node is down too) does not stop the
        start: the map's moving and draining buckets keep every query and write right
        meanwhile, and the next start or rebalance finishes the recovery.
        """
        try:
            await self.recover()
            self.recovery_error = None
        except ShardUnavailable as exc:
            self.recovery_error = str(exc)
        await self.push_views()

    def restart_client(self, name: str) -> None:
        """A new client of shard `name` (make_client), for the writes and the router alike:
        a shard whose actor could not start gets a new one."""
        self.clients[name] = self.make_client(name)
        if name in self.router.clients:
            self.router.clients[name] = self.clients[name]

    async def _call(self, name: str, coro, timeout: float | None = None):
        return await call(name, coro, timeout or self.timeout_s)

    async def _fan_out(self, calls: dict, timeout_s: float | None = None):
        return await fan_out(calls, timeout_s or self.timeout_s)

    # ------------------------------------------------------------ queries
    def prepare(self, query: Query) -> PreparedQuery:
        return self.router.prepare(query)

    async def search(self, query) -> SearchResult:
        return (await self.router.search_batch([query]))[0]

    async def search_batch(self, queries) -> list[SearchResult]:
        return await self.router.search_batch(queries)

    async def push_views(self) -> dict:
        """Tell every shard which buckets it hides under the current map (at start and after changes)."""
        p = self.placement
        excl = p.exclusions()
        _, failed = await self._fan_out({n: self.clients[n].set_view(p.version, p.n_buckets, excl.get(n, []))
                                         for n in p.shards})
        self.router.version = p.version
        # a shard that missed the push reads its view from the saved map when it restarts
        return failed

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
            await self._send_batch(batch, buckets)
        return len(batch["ids"])

    async def _send_batch(self, batch: dict, buckets: np.ndarray) -> None:
        """Write a batch to every target of its buckets (their owners, and where they move); the caller
        holds the buckets' locks."""
        placement = self.placement
        per_shard: dict[str, list[int]] = defaultdict(list)
        for i, b in enumerate(buckets.tolist()):
            for s in placement.write_targets(b):
                per_shard[s].append(i)
        calls = {s: self.clients[s].upsert(_take(batch, idx)) for s, idx in per_shard.items()}
        _, failed = await self._fan_out(calls, self.write_timeout_s)
        if failed:
            raise next(iter(failed.values()))

    async def update(self, item_id, attributes=None, meta: dict | None = None) -> dict:
        """Give an item new tokens (`attributes`, all of them) and/or metadata fields (`meta`, merged
        into its own), keeping its code and colour. The read and the write hold the item's bucket
        lock, so no other write to it lands between them. Returns the item as `get` does."""
        if attributes is None and not meta:
            raise InvalidInput("nothing to change: give attributes, meta fields, or both")
        if attributes is not None:
            if isinstance(attributes, str) or not isinstance(attributes, (list, tuple)):
                raise InvalidInput(f"attributes are a list of tokens, got {attributes!r}")
            attributes = sorted({check_token(t) for t in attributes})
        if meta is not None and not isinstance(meta, dict):
            raise InvalidInput(f"meta is an object of fields, got {meta!r}")
        buckets = self.placement.buckets_of([item_id])
        async with self._locks(buckets):
            owner = self.placement.owner[int(buckets[0])]
            got = await self._call(owner, self.clients[owner].get(item_id))
            batch = {"ids": [got["id"]], "codes": got["code"][None], "hists": got["hist"][None],
                     "attributes": [attributes if attributes is not None else got["attributes"]],
                     "metas": [{**got["meta"], **(meta or {})}], "quantised": True}
            await self._send_batch(batch, buckets)
            return await self._call(owner, self.clients[owner].get(item_id))

    async def delete(self, ids) -> int:
        ids = list(ids)
        keys = id_keys(ids)
        if len(set(keys.tolist())) != len(ids):
            raise InvalidInput("duplicate ids in a delete batch")
        buckets = self.placement.buckets_of(ids)
        async with self._locks(buckets):
            placement = self.placement
            per_shard: dict[str, list] = defaultdict(list)
            owners: set[str] = set()   # count deletions where the owner answers, not the copies
            for item_id, b in zip(ids, buckets.tolist()):
                for s in placement.write_targets(b):
                    per_shard[s].append(item_id)
                owners.add(placement.owner[b])
            answers, failed = await self._fan_out({s: self.clients[s].delete(v) for s, v in per_shard.items()},
                                                  self.write_timeout_s)
        if failed:
            raise next(iter(failed.values()))
        return sum(n for s, n in answers.items() if s in owners)

    async def existing(self, ids) -> list[bool]:
        """Which of these ids are indexed (asks each item's owner)."""
        ids = list(ids)
        buckets = self.placement.buckets_of(ids).tolist()
        per_shard: dict[str, list[int]] = defaultdict(list)
        for i, b in enumerate(buckets):
            per_shard[self.placement.owner[b]].append(i)
        answers, failed = await self._fan_out(
            {s: self.clients[s].contains_many([ids[i] for i in idx]) for s, idx in per_shard.items()})
        if failed:
            raise next(iter(failed.values()))
        out = [False] * len(ids)
        for s, idx in per_shard.items():
            for i, present in zip(idx, answers[s]):
                out[i] = present
        return out

    async def get(self, item_id) -> dict:
        b = int(self.placement.buckets_of([item_id])[0])
        owner = self.placement.owner[b]
        return await self._call(owner, self.clients[owner].get(item_id))

    async def list_items(self, cursor: str | None = None, limit: int = 100, required=()) -> dict:
        """A page of the whole catalog: `limit` items after `cursor` (None: the first page), and
        the cursor of the next page (None after the last). See listing.py. `required`: only
        the items that carry every one of these tokens (a cursor goes with the same tokens).

        Each bucket is read from its owner. An owner keeps its copy while the bucket moves and
        deletes it only after a new map version names another owner, so a page whose buckets
        kept their owners across the read missed nothing; one whose did not is read again, and
        the last time under those buckets' locks, which a move holds while it changes owners.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
            raise InvalidInput(f"limit must be an integer in [1, {MAX_LIST}], got {limit!r}")
        required = tuple(check_token(t) for t in required)
        nb = self.placement.n_buckets
        after = parse_cursor(cursor, nb)
        first = after[0] if after else 0
        for attempt in range(LIST_REREADS + 1):
            if attempt < LIST_REREADS:
                page = await self._list_page(first, after, limit, required)
            else:
                async with self._locks(np.arange(first, nb)):
                    page = await self._list_page(first, after, limit, required)
            if page is not None:
                return page
        raise AssertionError("a page read under its buckets' locks saw them change owner")

    async def _list_page(self, first: int, after, limit: int, required: tuple) -> dict | None:
        """The page after `after`, or None if a bucket it covers changed owner while it was read.

        Two rounds: every shard names the positions of its first `limit` items, which settles
        where the page ends; then only the shards with items in it send them, up to that end.
        """
        nb = self.placement.n_buckets
        owners = self.placement.owner[first:]
        by_owner: dict[str, list[int]] = defaultdict(list)
        for b, s in enumerate(owners, first):
            by_owner[s].append(b)
        positions = await self._ask({s: self.clients[s].list_positions(bs, nb, after, limit, required)
                                     for s, bs in by_owner.items()})
        until, more, in_page = page_end(positions, limit)
        items = await self._ask({s: self.clients[s].list_items(by_owner[s], nb, after, limit, required, until)
                                 for s in in_page})
        page, following = merge_pages(items.values(), limit, until, more)
        # the page covers the buckets up to where it ends (to the last bucket when it is the last page)
        covered = (until[0] if more else nb - 1) - first + 1
        if self.placement.owner[first: first + covered] != owners[:covered]:
            return None
        return {"items": [{k: it[k] for k in ("id", "attributes", "meta")} for it in page],
                "next_cursor": following}

    async def _ask(self, calls: dict) -> dict:
        answers, failed = await self._fan_out(calls)
        if failed:
            raise next(iter(failed.values()))
        return answers

    def _locks(self, buckets):
        """The locks of these buckets, taken in bucket order (no deadlock)."""
        return _MultiLock([self.bucket_locks[b] for b in np.unique(buckets).tolist()])

    @contextlib.asynccontextmanager
    async def writes_paused(self):
        """Inside, no write and no rebalance step runs, so the shards' files stand still; queries go on.

        Writes already running finish first (each holds its buckets' locks); new ones wait. A
        rebalance running is waited for, whole.
        """
        async with self.rebalance_lock:
            async with _MultiLock([self.bucket_locks[b] for b in range(self.placement.n_buckets)]):
                yield

    # ------------------------------------------------------------ rebalancing
    async def rebalance(self, n_shards: int, on_progress: Callable[[int, int], None] | None = None) -> dict:
        """Resize to n_shards, moving buckets online. Returns what was moved."""
        async with self.rebalance_lock:
            t0 = time.perf_counter()
            await self.recover()
            new_shards, moves = self.placement.plan(n_shards)
            added = [s for s in new_shards if s not in self.placement.shards]
            for s in added:
                if s not in self.clients:
                    if self.make_client is None:
                        raise InvalidInput("this coordinator cannot create shards")
                    self.clients[s] = self.make_client(s)
            if added:
                await self._started(added)
                await self._commit(shards=sorted(set(self.placement.shards) | set(new_shards)))
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
            await self._commit(shards=new_shards)
            for s in removed:
                self.clients.pop(s, None)
                if self.retire_client:
                    self.retire_client(s)
            return {"shards": new_shards, "moved_buckets": len(moves), "moved_items": moved_items,
                    "removed_shards": removed, "version": self.placement.version,
                    "seconds": time.perf_counter() - t0}

    async def _started(self, shards: list[str]) -> None:
        """Wait until new shards answer, before the map names them: a shard that cannot start
        (no node with room for it, say) would make every later query wait for it and answer
        partial. If one does not, the rebalance stops here and nothing has changed."""
        _, failed = await self._fan_out({s: self.clients[s].stats() for s in shards}, self.write_timeout_s)
        if failed:
            for s in shards:
                self.clients.pop(s, None)
                if self.retire_client:
                    self.retire_client(s)
            why = "; ".join(str(exc) for exc in failed.values())
            raise ShardUnavailable(", ".join(sorted(failed)), f"a new shard did not start, nothing was moved ({why}). "
                                   "Does the cluster have room for it (FASHION_SHARD_CPUS)?")

    async def _move(self, buckets: list[int], src: str, dst: str) -> int:
        nb = self.placement.n_buckets
        locks = _MultiLock([self.bucket_locks[b] for b in buckets])
        async with locks:
            await self._commit(moving={**self.placement.moving, **{b: dst for b in buckets}})
            batch = await self._call(src, self.clients[src].export_buckets(buckets, nb), 60)
            if batch["ids"]:
                batch["quantised"] = True
                await self._call(dst, self.clients[dst].upsert(batch), 60)
            owner = list(self.placement.owner)
            for b in buckets:
                owner[b] = dst
            moving = {b: s for b, s in self.placement.moving.items() if b not in buckets}
            await self._commit(owner=owner, moving=moving,
                               draining={**self.placement.draining, **{b: src for b in buckets}})
        await self._call(src, self.clients[src].delete_buckets(buckets, nb), 60)
        await self._commit(draining={b: s for b, s in self.placement.draining.items() if b not in buckets})
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
            await self._commit(moving={})
        by_src: dict[str, list[int]] = defaultdict(list)
        for b, src in self.placement.draining.items():
            by_src[src].append(b)
        for src, buckets in by_src.items():   # a finished copy: the stale one goes
            await self._call(src, self.clients[src].delete_buckets(buckets, nb), 60)
        if by_src:
            await self._commit(draining={})

    async def _commit(self, **changes) -> None:
        """A new map version: saved durably, then pushed to the shards."""
        new = Placement.from_json(self.placement.to_json())
        for k, v in changes.items():
            setattr(new, k, v)
        new.version = self.placement.version + 1
        new.save(self.root)
        self.placement = new
        for name in new.shards:  # the router asks exactly the shards of the current map
            if name in self.clients:
                self.router.clients[name] = self.clients[name]
        for name in list(self.router.clients):
            if name not in new.shards:
                del self.router.clients[name]
        await self.push_views()

    # ------------------------------------------------------------ admin
    async def stats(self) -> dict:
        answers, failed = await self._fan_out({n: self.clients[n].stats() for n in self.placement.shards})
        return {"version": self.placement.version, "n_buckets": self.placement.n_buckets,
                "buckets_per_shard": self.placement.counts(),
                "items": sum(a["items"] for a in answers.values()),
                "shards": {n: {"items": a["items"], "bytes": a["bytes"], "rss_bytes": a.get("rss_bytes"),
                                "warnings": a["warnings"], "compaction_error": a.get("compaction_error")}
                           for n, a in answers.items()},
                "unavailable": sorted(failed), "why_unavailable": {n: exc.reason for n, exc in failed.items()},
                "moving": len(self.placement.moving), "recovery_error": self.recovery_error}


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


__all__ = ["Coordinator", "SearchResult"]
