"""The read path: fan a batch of queries out to every shard, check views, relax, merge.

One round normally: the whole batch goes to every shard in one call each (all
submitted, then awaited together, each under a timeout). A batch of more than
`Router.chunk` queries goes as several such batches, `Router.window` in flight.
If the shards together have fewer than k candidates for a query, one more round
asks at the least relaxation level that gives k. A shard that fails or times out is named in
`missing` and the answer says `partial: true`.

Every shard answer carries the placement version of the shard's view (which
buckets it hides during a rebalance). If the answers of one query disagree with
each other or with the router's version, the query straddled a placement change:
the router refreshes its shard list and asks again, so no answer ever counts an
item twice or misses one that moved.
"""
from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import numpy as np

from shards.errors import FashionSearchError, ShardUnavailable
from shards.query import MAX_K, Hit, PreparedQuery, Query, prepare, prepare_many

from .merge import global_level, merge_answers, widened_global_level
from .protocol import QueryBatch

MAX_ATTEMPTS = 50


@dataclass
class SearchResult:
    hits: list[Hit]
    relaxed: tuple[str, ...]          # required tokens dropped because too few items had them
    level: int
    candidates: int
    partial: bool = False
    missing: list[str] = field(default_factory=list)
    took_ms: float = 0.0
    widened: tuple[str, ...] = ()     # narrowing tokens dropped because the scan fit the budget without them

    def to_dict(self) -> dict:
        return {"hits": [h.to_dict() for h in self.hits], "relaxed": list(self.relaxed),
                "widened": list(self.widened), "level": self.level, "candidates": self.candidates,
                "partial": self.partial, "missing": self.missing, "took_ms": self.took_ms}


async def call(name: str, coro, timeout_s: float):
    """Await one shard call; every failure becomes ShardUnavailable (bad input stays itself)."""
    try:
        return await asyncio.wait_for(coro, timeout_s)
    except asyncio.TimeoutError as exc:
        raise ShardUnavailable(name, f"no answer within {timeout_s:.1f} s") from exc
    except FashionSearchError:
        raise
    except Exception as exc:  # a dead actor, a lost node: translated at this boundary
        cause = getattr(exc, "cause", None)  # Ray wraps errors raised inside the actor
        if isinstance(cause, FashionSearchError) and not isinstance(cause, ShardUnavailable):
            raise cause from None
        raise ShardUnavailable(name, f"{type(exc).__name__}: {last_line(str(exc))}") from exc


def last_line(text: str) -> str:
    """The last line of an error's text, without terminal colours: where Ray's message of an
    actor that died puts the exception that killed it (its traceback comes before)."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if line.strip()]
    return lines[-1] if lines else text


async def fan_out(calls: dict, timeout_s: float) -> tuple[dict, dict]:
    """Await every call together; returns (answers, failures) by shard name."""
    names = list(calls)
    results = await asyncio.gather(*(call(n, calls[n], timeout_s) for n in names), return_exceptions=True)
    ok, failed = {}, {}
    for n, r in zip(names, results):
        if isinstance(r, ShardUnavailable):
            failed[n] = r
        elif isinstance(r, BaseException):
            raise r
        else:
            ok[n] = r
    return ok, failed


class Router:
    """Queries over a set of shard clients (the ShardClient protocol)."""

    # queries per shard call: bigger calls share more of each constraint set's fixed work (4 shards,
    # 2,048 queries: 8,110 q/s in one call, 7,112-7,268 in chunks of 1,024, 6,603-6,815 in chunks of
    # 256), while a chunk bounds a job's messages
    chunk = 2048
    window = 2     # chunks in flight: the shards scan one while the router merges another

    def __init__(self, clients: dict, version: int, *, bits: int, hist_bins: int, timeout_s: float = 5.0,
                 refresh: Callable[[], Awaitable[None]] | None = None):
        self.clients = clients            # name -> client; the shards that answer queries
        self.version = version            # placement version the router believes current
        self.bits, self.hist_bins = bits, hist_bins
        self.timeout_s = timeout_s
        self.refresh = refresh            # brings clients and version up to date

    def prepare(self, query: Query) -> PreparedQuery:
        return prepare(query, self.bits, self.hist_bins, MAX_K)

    async def search_batch(self, queries) -> list[SearchResult]:
        """Every query validated first, then searched in chunks of `chunk`, `window` chunks in flight.

        A batch job's queries need not fit one message: each chunk is one call per
        shard, and while the shards scan one chunk the router merges another.
        """
        t0 = time.perf_counter()
        qs = prepare_many(queries, self.bits, self.hist_bins, MAX_K)  # a bad query fails the batch up front
        if not qs:
            return []
        if not self.clients and self.refresh is not None:
            await self.refresh()      # a router that has never seen the map asks for it first
        if len(qs) <= self.chunk:
            out = await self._search(qs)
        else:
            gate = asyncio.Semaphore(self.window)

            async def one(part):
                async with gate:
                    return await self._search(part)
            parts = await asyncio.gather(*(one(qs[i: i + self.chunk]) for i in range(0, len(qs), self.chunk)))
            out = [r for part in parts for r in part]
        took = (time.perf_counter() - t0) * 1e3
        for r in out:
            r.took_ms = took
        return out

    async def _search(self, qs: list[PreparedQuery]) -> list[SearchResult]:
        for attempt in range(MAX_ATTEMPTS):
            out = await self._attempt(qs)
            if out is not None:
                return out
            if self.refresh is not None:
                await self.refresh()
            await asyncio.sleep(0.002 * attempt)
        raise ShardUnavailable("placement", "shard views kept changing; try again")

    async def _round(self, clients, qs, levels):
        batch = QueryBatch(qs, levels)
        answers, failed = await fan_out({n: c.search_batch(batch) for n, c in clients.items()}, self.timeout_s)
        views = {a.view for a in answers.values()}
        return answers, failed, views

    async def _attempt(self, qs):
        clients, version = dict(self.clients), self.version
        answers, failed, views = await self._round(clients, qs, [0] * len(qs))
        if views - {version}:
            return None
        size = sum(a.size for a in answers.values())    # the catalog a scan budget is a share of
        per_query = [[a.counts[i] for a in answers.values()] for i in range(len(qs))]
        for_k = [global_level(c, q.k, len(q.required)) if q.required else 0 for c, q in zip(per_query, qs)]
        levels = [widened_global_level(c, kl, q.widen, q.scan_budget * size)
                  for c, kl, q in zip(per_query, for_k, qs)]
        again = np.asarray([i for i, lv in enumerate(levels) if lv > 0], np.int64)
        first = np.setdiff1d(np.arange(len(qs)), again)
        more: dict = {}
        if len(again):  # global relaxation: one more round for the queries that need it
            live = {n: c for n, c in clients.items() if n in answers}
            more, failed2, views2 = await self._round(live, [qs[i] for i in again.tolist()],
                                                      [levels[i] for i in again.tolist()])
            if views2 - {version}:
                return None
            failed.update(failed2)
        parts = [(a, first, first) for n, a in answers.items() if n not in failed]
        parts += [(a, np.arange(len(again)), again) for n, a in more.items() if n not in failed]
        candidates = [0] * len(qs)
        for a, rows, queries in parts:
            for r, i in zip(rows.tolist(), queries.tolist()):
                c = a.counts[r]
                candidates[i] += c[min(levels[i], len(c) - 1)]
        missing = sorted(failed)
        return [SearchResult(hits=hits, relaxed=q.relaxed(kl), level=lv, candidates=n, partial=bool(missing),
                             missing=missing, widened=q.relaxed(lv)[kl:])
                for q, kl, lv, n, hits in zip(qs, for_k, levels, candidates, merge_answers(parts, qs))]
