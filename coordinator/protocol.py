"""What the coordinator needs of a shard, and the in-process implementation.

A shard client is anything with these coroutines (Ray actors in `cluster/`, a
plain in-process `Shard` here, a fake in tests). The coordinator depends on
this protocol only, so most of its logic is tested without Ray.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from shards.answer import Answer
from shards.query import PreparedQuery
from shards.shard import Shard
from shards.wire import encode_queries


@dataclass(frozen=True)
class QueryBatch:
    """One round's queries and relaxation levels, as every shard of the round gets them."""
    queries: list[PreparedQuery]
    levels: list

    @cached_property
    def payload(self) -> bytes:
        """The msgpack form (shards/wire.py), encoded once however many shards it goes to."""
        return encode_queries(self.queries, self.levels)


class ShardClient(Protocol):
    name: str

    async def search_batch(self, batch: QueryBatch) -> Answer: ...  # one row per query
    async def set_view(self, version: int, n_buckets: int, hidden: list[int]) -> None: ...
    async def upsert(self, batch: dict) -> int: ...
    async def delete(self, ids: list) -> int: ...
    async def get(self, item_id) -> dict: ...
    async def export_buckets(self, buckets: list[int], n_buckets: int) -> dict: ...
    async def delete_buckets(self, buckets: list[int], n_buckets: int) -> int: ...
    async def stats(self) -> dict: ...
    async def contains_many(self, ids: list) -> list[bool]: ...
    async def list_positions(self, buckets: list[int], n_buckets: int, after, limit: int,
                             required: tuple = ()) -> tuple: ...
    async def list_items(self, buckets: list[int], n_buckets: int, after, limit: int,
                         required: tuple = (), until=None) -> list[dict]: ...


class LocalShardClient:
    """A `Shard` in this process, behind the async protocol (used by tests and benchmarks)."""

    def __init__(self, name: str, shard: Shard):
        self.name = name
        self.shard = shard

    async def search_batch(self, batch: QueryBatch) -> Answer:
        return self.shard.search_columns(batch.queries, batch.levels)

    async def set_view(self, version, n_buckets, hidden):
        self.shard.set_view(version, n_buckets, hidden)

    async def upsert(self, batch: dict) -> int:
        return self.shard.upsert(batch["ids"], batch["codes"], batch["hists"], batch["attributes"],
                                 batch.get("metas"), quantised=batch.get("quantised", False))

    async def delete(self, ids: list) -> int:
        return self.shard.delete(ids)

    async def get(self, item_id) -> dict:
        return self.shard.get(item_id)

    async def export_buckets(self, buckets, n_buckets):
        return self.shard.export_buckets(buckets, n_buckets)

    async def delete_buckets(self, buckets, n_buckets):
        return self.shard.delete_buckets(buckets, n_buckets)

    async def stats(self) -> dict:
        await asyncio.sleep(0)
        return self.shard.stats()

    async def contains_many(self, ids):
        return self.shard.contains_many(ids)

    async def list_positions(self, buckets, n_buckets, after, limit, required=()):
        return self.shard.list_positions(buckets, n_buckets, after, limit, required)

    async def list_items(self, buckets, n_buckets, after, limit, required=(), until=None):
        return self.shard.list_items(buckets, n_buckets, after, limit, required, until)
