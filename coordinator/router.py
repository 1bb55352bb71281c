"""The read path: fan a batch of queries out to every shard, check views, relax, merge.

One round normally: the whole batch goes to every shard in one call each (all
submitted, then awaited together, each under a timeout). If the shards together
have fewer than k candidates for a query, one more round asks at the least
relaxation level that gives k. A shard that fails or times out is named in
`missing` and the answer says `partial: true`.

Every shard answer carries the placement version of the shard's view (which
buckets it hides during a rebalance). If the answers of one query disagree with
each other or with the router's version, the query straddled a placement change:
the router refreshes its shard list and asks again, so no answer ever counts an
item twice or misses one that moved.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from shards.errors import FashionSearchError, ShardUnavailable
from shards.query import MAX_K, Hit, PreparedQuery, Query, prepare

from .merge import global_level, merge_topk

MAX_ATTEMPTS = 50


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
        raise ShardUnavailable(name, f"{type(exc).__name__}: {exc}") from exc


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
        t0 = time.perf_counter()
        qs = [q if isinstance(q, PreparedQuery) else self.prepare(q) for q in queries]
        if not qs:
            return []
        if not self.clients and self.refresh is not None:
            await self.refresh()      # a router that has never seen the map asks for it first
        for attempt in range(MAX_ATTEMPTS):
            out = await self._attempt(qs)
            if out is not None:
                took = (time.perf_counter() - t0) * 1e3
                for r in out:
                    r.took_ms = took
                return out
            if self.refresh is not None:
                await self.refresh()
            await asyncio.sleep(0.002 * attempt)
        raise ShardUnavailable("placement", "shard views kept changing; try again")

    async def _round(self, clients, qs, levels):
        answers, failed = await fan_out({n: c.search_batch(qs, levels) for n, c in clients.items()},
                                        self.timeout_s)
        views = {r.view for a in answers.values() for r in a}
        return answers, failed, views

    async def _attempt(self, qs):
        clients, version = dict(self.clients), self.version
        answers, failed, views = await self._round(clients, qs, [0] * len(qs))
        if views - {version}:
            return None
        levels = [global_level([a[i].counts for a in answers.values()], q.k, len(q.required)) if q.required else 0
                  for i, q in enumerate(qs)]
        again = [i for i, lv in enumerate(levels) if lv > 0]
        if again:  # global relaxation: one more round for the queries that need it
            live = {n: c for n, c in clients.items() if n in answers}
            more, failed2, views2 = await self._round(live, [qs[i] for i in again], [levels[i] for i in again])
            if views2 - {version}:
                return None
            failed.update(failed2)
            for name, a in answers.items():
                a = list(a)
                for j, i in enumerate(again):
                    a[i] = more[name][j] if name in more else None
                answers[name] = a
        missing = sorted(failed)
        out = []
        for i, q in enumerate(qs):
            rs = [a[i] for n, a in answers.items() if n not in failed and a[i] is not None]
            hits = merge_topk([list(r.hits) for r in rs], q.k)
            lv = levels[i]
            out.append(SearchResult(hits=hits, relaxed=q.relaxed(lv), level=lv,
                                    candidates=sum(r.counts[min(lv, len(r.counts) - 1)] for r in rs),
                                    partial=bool(missing), missing=missing))
        return out
