"""Shards as Ray actors: a thin wrapper, and the client the coordinator talks to.

The actor opens its shard from `<storage root>/<name>` in its constructor, so a
restarted actor (max_restarts) comes back with every acknowledged write: the
snapshot plus the log. On a real cluster the storage root is a path every node
can read and write (a shared filesystem; see deploy/README.md).
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import time
from pathlib import Path

import ray

from coordinator.placement import Placement
from coordinator.protocol import QueryBatch
from shards.answer import Answer
from shards.errors import ShardUnavailable, StorageError
from shards.shard import Shard, ShardConfig
from shards.wire import decode_answer, decode_queries, encode_answer

from .uncancelled import submit

NAMESPACE = "fashion-search"
SETTINGS = "cluster.json"   # written at the storage root before any actor of the cluster starts


def check_root_here(root: str) -> None:
    """Refuse to start on a node where the shared storage root is not mounted.

    There the root's path is an empty local folder: a shard opened in it would start empty
    and take writes the other nodes never see.
    """
    if not (Path(root) / SETTINGS).exists():
        raise StorageError(f"the storage root {root} holds no cluster on {socket.gethostname()} (no {SETTINGS}): "
                           "mount the shared storage root at that path on every node (deploy/README.md)")


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class ShardActor:
    def __init__(self, root: str, name: str, config: dict):
        self.name = name
        check_root_here(root)
        self.shard = Shard(Path(root) / name, ShardConfig(**config))
        # a restarted shard takes its view (hidden buckets) from the saved map
        placement = Placement.load(Path(root))
        if placement is not None:
            self.shard.set_view(placement.version, placement.n_buckets, placement.exclusions().get(name, []))
        self.compact_every = 200_000  # log bytes between snapshots are bounded by this many items

    def ready(self) -> dict:
        return {"name": self.name, "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "items": len(self.shard)}

    def search_wire(self, payload: bytes) -> bytes:
        """Shard.search_columns with queries and answer as msgpack bytes (shards/wire.py), not pickles."""
        cfg = self.shard.config
        qs, levels = decode_queries(payload, cfg.bits, cfg.hist_bins, cfg.max_k)
        return encode_answer(self.shard.search_columns(qs, levels))

    def set_view(self, version, n_buckets, hidden) -> None:
        self.shard.set_view(version, n_buckets, hidden)

    def upsert(self, batch: dict) -> int:
        n = self.shard.upsert(batch["ids"], batch["codes"], batch["hists"], batch["attributes"],
                              batch.get("metas"), quantised=batch.get("quantised", False))
        self._maybe_compact()
        return n

    def delete(self, ids) -> int:
        n = self.shard.delete(ids)
        self._maybe_compact()
        return n

    def get(self, item_id) -> dict:
        return self.shard.get(item_id)

    def export_buckets(self, buckets, n_buckets) -> dict:
        return self.shard.export_buckets(buckets, n_buckets)

    def delete_buckets(self, buckets, n_buckets) -> int:
        return self.shard.delete_buckets(buckets, n_buckets)

    def stats(self) -> dict:
        import psutil
        st = self.shard.stats()
        st["node"] = ray.get_runtime_context().get_node_id()
        st["rss_bytes"] = psutil.Process().memory_info().rss   # the whole actor process, runtime included
        return st

    def contains_many(self, ids) -> list[bool]:
        return self.shard.contains_many(ids)

    def list_positions(self, buckets, n_buckets, after, limit, required=()) -> tuple:
        return self.shard.list_positions(buckets, n_buckets, after, limit, required)

    def list_items(self, buckets, n_buckets, after, limit, required=(), until=None) -> list[dict]:
        return self.shard.list_items(buckets, n_buckets, after, limit, required, until)

    def compact(self) -> None:
        self.shard.compact()

    def _maybe_compact(self) -> None:
        # keep replay short: fold the log into a snapshot once it holds ~compact_every items' worth
        if self.shard.maybe_compact(self.compact_every * 200):
            release_free_memory()


def release_free_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc keeps them after big write batches)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:   # not glibc: nothing to do
        pass


def actor_name(shard: str) -> str:
    return f"fashion-{shard}"


def start_shard(root: str, shard: str, config: dict, cpus: float | None = None):
    """Get the named shard actor, or create it (spread over the cluster's nodes).

    A shard reserves no CPU by default (FASHION_SHARD_CPUS sets it): on a small
    machine a CPU reservation per shard would leave shards unscheduled, and a
    shard mostly waits for queries anyway.
    """
    cpus = float(os.environ.get("FASHION_SHARD_CPUS", "0")) if cpus is None else cpus
    return ShardActor.options(name=actor_name(shard), namespace=NAMESPACE, get_if_exists=True,
                              lifetime="detached", scheduling_strategy="SPREAD",
                              num_cpus=cpus).remote(root, shard, config)


class RayShardClient:
    """The coordinator's view of a shard actor: the ShardClient protocol over Ray calls.

    Every call but search waits out a restart: while Ray restarts the actor (its node
    died, or it crashed) a call fails with ActorUnavailableError, "may or may not have
    been executed". Each such call here is idempotent (an upsert writes the same values
    again, a delete deletes what is gone), so it is sent again for up to `restart_s`.
    Searches are not retried: the router answers `partial` at once and asks again later.
    """

    restart_s = 30.0

    def __init__(self, name: str, handle):
        self.name = name
        self.handle = handle

    async def _call(self, method: str, *args):
        deadline, pause = time.monotonic() + self.restart_s, 0.1
        while True:
            try:
                return await submit(getattr(self.handle, method), *args)
            except ray.exceptions.ActorUnavailableError:
                if time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(1.0, pause * 2)

    async def search_batch(self, batch: QueryBatch) -> Answer:
        return decode_answer(await submit(self.handle.search_wire, batch.payload))

    async def ready(self):
        return await self._call("ready")

    async def set_view(self, version, n_buckets, hidden):
        return await self._call("set_view", version, n_buckets, hidden)

    async def upsert(self, batch):
        return await self._call("upsert", batch)

    async def delete(self, ids):
        return await self._call("delete", ids)

    async def get(self, item_id):
        return await self._call("get", item_id)

    async def export_buckets(self, buckets, n_buckets):
        return await self._call("export_buckets", buckets, n_buckets)

    async def delete_buckets(self, buckets, n_buckets):
        return await self._call("delete_buckets", buckets, n_buckets)

    async def stats(self):
        return await self._call("stats")

    async def contains_many(self, ids):
        return await self._call("contains_many", ids)

    async def list_positions(self, buckets, n_buckets, after, limit, required=()):
        return await self._call("list_positions", buckets, n_buckets, after, limit, required)

    async def list_items(self, buckets, n_buckets, after, limit, required=(), until=None):
        return await self._call("list_items", buckets, n_buckets, after, limit, required, until)


class UnreachableShard:
    """A shard whose actor Ray cannot find (it failed to start, and Ray dropped its name):
    every call is ShardUnavailable, so queries answer `partial` and name it."""

    def __init__(self, name: str):
        self.name = name

    def __getattr__(self, method: str):
        async def unavailable(*args):
            raise ShardUnavailable(self.name, "its actor is not running (`fashion-search stats` says why)")
        return unavailable


def shard_client(name: str, old=None):
    """The client of a named shard actor (`old`, if it reached one); see UnreachableShard."""
    if isinstance(old, RayShardClient):
        return old
    try:
        return RayShardClient(name, ray.get_actor(actor_name(name), namespace=NAMESPACE))
    except ValueError:
        return UnreachableShard(name)


def shard_clients(names, old: dict) -> dict:
    """Clients of the shards a placement map names, keeping each one `old` already has."""
    return {name: shard_client(name, old.get(name)) for name in names}
