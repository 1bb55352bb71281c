"""The cluster at run time: Ray, the shard actors and the coordinator actor.

    open_cluster(storage, address=None, shards=4) -> Cluster

starts (or joins) Ray, then gets or creates the named, restartable coordinator
actor, which in turn gets or creates one named shard actor per shard of the
durable placement map in the storage root. Everything reloads from the storage
root, so the same call after a crash, a restart of Ray or on a new machine with
the same storage finds every acknowledged item.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from pathlib import Path

import ray
import uvloop

from coordinator.coordinator import Coordinator
from coordinator.placement import Placement
from coordinator.router import Router, fan_out, last_line
from shards.errors import FashionSearchError, InvalidInput, StorageError
from shards.files import write_atomically
from shards.shard import ShardConfig

from .backup import backup_root
from .model_record import check_models, recorded_model
from .ownership import Heartbeat, check_free, release_record
from .shard_actor import (NAMESPACE, SETTINGS, RayShardClient, actor_name, check_root_here, shard_clients,
                          start_shard)

COORDINATOR = "fashion-coordinator"
log = logging.getLogger(__name__)

# Replies up to this size travel inline with the actor's answer rather than through the
# object store (Ray's default limit is 100 KiB). A 256-query shard answer with titles and
# image paths is ~330 KB. Four actors replying 110-300 KB took 2.2-2.8 ms inline against
# 4.6-5.2 ms through the store; 800 KB was even, 2 MB slower inline (13.5 against 7.6 ms).
# Ray reads it from the environment of the processes it starts (deploy/README.md: set it
# before `ray start` on every node).
RAY_ENV = {"RAY_max_direct_call_object_size": str(512 * 1024)}


def ray_environment() -> None:
    """Settings that must be in the environment before a local Ray starts; values already set win."""
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)


def _load_settings(root: Path, shards: int, config: ShardConfig | None) -> tuple[Placement, ShardConfig]:
    import json
    from dataclasses import asdict
    placement = Placement.load(root)
    path = root / SETTINGS
    if path.exists():
        stored = ShardConfig(**json.loads(path.read_text()))
        if config is not None and config != stored:
            raise InvalidInput(f"storage root {root} holds shards with {stored}, not {config}")
        config = stored
    else:
        config = config or ShardConfig()
        root.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(asdict(config)))
    if placement is None:
        placement = Placement.initial(shards)
        placement.save(root)
    return placement, config


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class CoordinatorActor:
    """Hosts the Coordinator; an async actor, so queries run while a rebalance moves buckets."""

    def __init__(self, root: str, shards: int, config: dict | None, timeout_s: float, existing: bool = False):
        from dataclasses import asdict
        self.root = Path(root)
        if existing:   # the driver saw a cluster there: this node must see it too, not make a new one
            check_root_here(root)
        placement, cfg = _load_settings(self.root, shards, ShardConfig(**config) if config else None)
        self.heartbeat = Heartbeat(self.root, ray.get_runtime_context().gcs_address)   # cluster/ownership.py
        self.config = asdict(cfg)
        clients = {s: self._client(s) for s in placement.shards}
        self.coordinator = Coordinator(self.root, placement, clients, bits=cfg.bits, hist_bins=cfg.hist_bins,
                                       timeout_s=timeout_s, make_client=self._client, retire_client=self._retire)
        self.recovered = False

    def _client(self, shard: str) -> RayShardClient:
        return RayShardClient(shard, start_shard(str(self.root), shard, self.config))

    def _retire(self, shard: str) -> None:
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(actor_name(shard), namespace=NAMESPACE), no_restart=True)

    async def _ready(self):
        if not self.recovered:  # finish a rebalance that a crash interrupted; push views
            await self.coordinator.start()
            self.recovered = True

    async def ready(self) -> dict:
        """Each shard's info, or why it cannot serve (`unavailable`): a shard that cannot open
        (a damaged directory, say) leaves the others serving, and queries answer `partial`."""
        await self._ready()
        names = list(self.coordinator.placement.shards)
        infos, failed = await fan_out({n: self.coordinator.clients[n].ready() for n in names}, 60)
        if failed:   # one that could not open may have been repaired since: started again, once a call
            for n in failed:
                self.coordinator.restart_client(n)
            more, failed = await fan_out({n: self.coordinator.clients[n].ready() for n in failed}, 60)
            infos.update(more)
        return {"shards": infos, "unavailable": {n: exc.reason for n, exc in failed.items()},
                "version": self.coordinator.placement.version, "config": self.config}

    def root_path(self) -> str:
        return str(self.root)

    def release(self) -> None:
        """Give the storage root up (the cluster is being stopped): another Ray cluster may open it at once."""
        self.heartbeat.release()

    async def search(self, query):
        return (await self.coordinator.search_batch([query]))[0]

    async def search_batch(self, queries):
        return await self.coordinator.search_batch(queries)

    async def upsert(self, ids, codes, hists, attributes, metas=None):
        await self._ready()
        return await self.coordinator.upsert(ids, codes, hists, attributes, metas)

    async def delete(self, ids):
        await self._ready()
        return await self.coordinator.delete(ids)

    async def get(self, item_id):
        return await self.coordinator.get(item_id)

    async def update(self, item_id, attributes=None, meta=None):
        await self._ready()
        return await self.coordinator.update(item_id, attributes, meta)

    async def existing(self, ids):
        return await self.coordinator.existing(ids)

    async def list_items(self, cursor, limit, required=()):
        return await self.coordinator.list_items(cursor, limit, required)

    async def rebalance(self, n_shards: int):
        await self._ready()
        return await self.coordinator.rebalance(n_shards)

    async def backup(self, dest: str) -> dict:
        """Copy the storage root to `dest` with writes paused, queries going on (cluster/backup.py)."""
        await self._ready()
        return await backup_root(self.coordinator, self.root, dest)

    async def stats(self):
        st = await self.coordinator.stats()
        st["nodes"] = len([n for n in ray.nodes() if n["Alive"]])
        st["features_model"] = recorded_model(self.root)   # which model's codes the catalog holds
        return st

    async def placement(self):
        return self.coordinator.placement.to_json()


class _LoopThread:
    """A private event loop on a daemon thread, so synchronous callers can run the router.

    uvloop, as under the REST daemon: it resolves the shard calls' futures with less
    overhead than asyncio's own loop (single queries through Ray measured p50 3.7-4.0 ms
    against 4.0-5.2 ms, three runs each, on this VM).
    """

    def __init__(self):
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fashion-router", daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float):
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:   # timed out, or Ctrl-C / SIGTERM: stop the coroutine at its next await, rather
            future.cancel()     # than leave it running, or pending when the loop stops ("Task was destroyed")
            concurrent.futures.wait([future], timeout=2)
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


class Cluster:
    """A driver-side handle with synchronous calls.

    Queries go straight from this process to the shard actors (one hop) through a
    Router; writes, rebalancing and admin go through the coordinator actor, the
    single writer of the placement map.
    """

    def __init__(self, handle, started_ray: bool, timeout_s: float, root: str):
        self.handle = handle
        self.started_ray = started_ray
        self.root = root
        self._loop = _LoopThread()
        info = self.coordinator_call("ready", timeout=150)   # ready() waits for the shards at most 2 x 60 s
        self.unavailable = info["unavailable"]   # shard -> why it does not answer (commands print it)
        for name, why in self.unavailable.items():
            log.warning("shard %s is unavailable, answers will be partial: %s", name, why)
        cfg = info["config"]
        self.router = Router({}, 0, bits=cfg["bits"], hist_bins=cfg["hist_bins"], timeout_s=timeout_s,
                             refresh=self._refresh)
        self._loop.run(self._refresh(), 60)

    async def _refresh(self) -> None:
        placement = await self.handle.placement.remote()
        self.router.clients = shard_clients(placement["shards"], self.router.clients)
        self.router.version = placement["version"]

    # calls that may run twice: a restarting coordinator answers "may or may not have been executed"
    # (an upsert writes the same values again, a delete deletes what is gone); a rebalance is not sent
    # again behind the caller's back
    idempotent = frozenset({"ready", "stats", "get", "existing", "upsert", "delete", "placement"})
    restart_s = 60.0

    def coordinator_call(self, method: str, *args, timeout: float = 600):
        """A coordinator method, waiting out a restart of its actor (its node died) where that is safe."""
        deadline, pause = time.monotonic() + self.restart_s, 0.1
        while True:
            try:
                return ray.get(getattr(self.handle, method).remote(*args), timeout=timeout)
            except ray.exceptions.ActorUnavailableError:
                if method not in self.idempotent or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(1.0, pause * 2)
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, FashionSearchError):
                    raise cause from None
                raise
            except ray.exceptions.ActorDiedError as exc:   # it could not start: say why, not Ray's traceback
                raise StorageError(f"the coordinator of {self.root} cannot run: {last_line(str(exc))}") from None

    def search(self, query):
        return self.search_batch([query])[0]

    def search_batch(self, queries):
        return self._loop.run(self.router.search_batch(queries), timeout=600)

    def upsert(self, ids, codes, hists, attributes, metas=None):
        return self.coordinator_call("upsert", ids, codes, hists, attributes, metas)

    def delete(self, ids):
        return self.coordinator_call("delete", ids)

    def get(self, item_id):
        return self.coordinator_call("get", item_id)

    def existing(self, ids):
        return self.coordinator_call("existing", ids)

    def rebalance(self, n_shards: int):
        report = self.coordinator_call("rebalance", n_shards)
        self._loop.run(self._refresh(), 60)
        return report

    def stats(self):
        return self.coordinator_call("stats")

    def similar_items(self, out, k: int, w_colour: float, log=print, resume: bool = False) -> dict:
        """Every item's k most similar items, one JSON line each, into the new file `out` (cluster/similar_job.py)."""
        from .similar_job import similar_items

        async def placement():
            return await self.handle.placement.remote()
        return self._loop.run(similar_items(self.router, placement, out, k, w_colour, log=log, resume=resume),
                              timeout=None)

    def list_page(self, cursor: str | None, limit: int) -> dict:
        """One page of the catalog (Coordinator.list_items)."""
        return self.coordinator_call("list_items", cursor, limit)

    def items(self):
        """Every item of the catalog (id, attributes, meta), read page by page (coordinator/listing.py)."""
        from coordinator.listing import every_item
        return every_item(self.list_page)

    def export(self, out, log=print, resume: bool = False) -> dict:
        """Every item, one JSON line each, into the new file `out` (cluster/export.py)."""
        from .export import export_items
        return export_items(self.list_page, out, log, resume=resume)

    def prune_uploads(self, min_age_s: float, dry_run: bool = False) -> dict:
        """Remove uploaded photos no item records (cluster/prune_uploads.py)."""
        from .prune_uploads import prune_uploads
        return prune_uploads(self.items(), self.root, min_age_s, dry_run)

    def backup(self, dest) -> dict:
        """A backup of the storage root in the new folder `dest` (cluster/backup.py), taken online."""
        return self.coordinator_call("backup", str(Path(dest).resolve()), timeout=None)

    def close(self) -> None:
        self._loop.stop()
        if self.started_ray:
            stop_local_ray(self, started=True)   # a Ray this process started stops here, the coordinator with it

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_cluster(storage: str | os.PathLike, address: str | None = None, shards: int = 4,
                 config: ShardConfig | None = None, timeout_s: float = 5.0, codes_photos: bool = False) -> Cluster:
    """The cluster on `storage`, made if the root is new; Ray is started unless connected.

    `codes_photos`: the caller codes photos for this root, so its feature model must be the one
    that coded the root's catalog (cluster/model_record.py): checked before Ray starts where the
    root exists, and recorded once a new root is made.
    """
    if codes_photos:
        check_models(storage)
    started = False
    if not ray.is_initialized():
        ray_environment()
        try:
            ray.init(address=address, namespace=NAMESPACE, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError) as exc:
            if address is None:
                raise
            raise InvalidInput(f"cannot connect to the Ray cluster at {address}: {_why(exc)}") from exc
        started = True
    from dataclasses import asdict
    root = str(Path(storage).resolve())
    try:
        _check_root(root)
        handle = CoordinatorActor.options(name=COORDINATOR, namespace=NAMESPACE, get_if_exists=True,
                                          lifetime="detached").remote(
            root, shards, asdict(config) if config else None, timeout_s, (Path(root) / SETTINGS).exists())
        cluster = Cluster(handle, started, timeout_s, root)
    except BaseException:
        if started:
            ray.shutdown()
        raise
    if codes_photos:
        try:
            check_models(root)
        except BaseException:
            cluster.close()
            raise
    return cluster


def _why(exc: BaseException) -> str:
    """The first line of the deepest cause Ray gives, and what to do about token authentication."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip()
    if "Authentication" in text or "auth" in text.lower():
        return ("its token authentication refused this process; put the cluster's token in ~/.ray/auth_token "
                "or RAY_AUTH_TOKEN (the command then sets RAY_AUTH_MODE=token; deploy/README.md)")
    return text.splitlines()[-1] if text else type(exc).__name__


def _check_root(root: str) -> None:
    """One Ray cluster serves one storage root, and one storage root is served by one Ray cluster."""
    try:
        running = ray.get_actor(COORDINATOR, namespace=NAMESPACE)
    except ValueError:
        running = None
    if running is not None:
        theirs = ray.get(running.root_path.remote(), timeout=120)
        if theirs != root:   # the actor names are per Ray cluster: a second root would get the first one's shards
            raise InvalidInput(f"the Ray cluster here already serves the storage root {theirs}; one Ray cluster "
                               f"serves one storage root: give --storage {theirs}, or stop that cluster first")
        return
    check_free(root, ray.get_runtime_context().gcs_address)


def ray_started_here() -> bool:
    """Whether this process started the Ray cluster it is connected to, rather than joined one.

    Ray has no public call for it; without the attribute the answer is "no", and a root left
    unreleased is free STALE_S after its last heartbeat (cluster/ownership.py).
    """
    node = getattr(ray._private.worker, "_global_node", None)
    return bool(getattr(node, "head", False))


def stop_local_ray(cluster: "Cluster", started: bool | None = None) -> None:
    """Stop the Ray cluster this process started, Serve and every actor with it, then give the root up.

    In that order no write can reach the root once its record is gone, and nothing waits
    for Serve to drain first (serve.shutdown() took 4.5 s of the 10 s `docker stop` allows).
    A Ray this process only joined is left running, and its record with it (`started`
    says which, when the caller knows; else ray_started_here()).
    """
    if not (ray_started_here() if started is None else started):
        return
    me = ray.get_runtime_context().gcs_address
    ray.shutdown()
    release_record(cluster.root, me)


def _release(handle) -> None:
    with contextlib.suppress(Exception):   # a coordinator already gone leaves a record that goes stale
        ray.get(handle.release.remote(), timeout=10)


def shutdown_cluster() -> None:
    """Kill the coordinator and shard actors of this namespace (their data stays on disk)."""
    with contextlib.suppress(ValueError):
        _release(ray.get_actor(COORDINATOR, namespace=NAMESPACE))
    for info in ray.util.list_named_actors(all_namespaces=True):
        if info.get("namespace") == NAMESPACE and info["name"].startswith("fashion-"):
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(info["name"], namespace=NAMESPACE), no_restart=True)
