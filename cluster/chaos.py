"""`fashion-search chaos`: faults injected into a live cluster while a client writes and reads.

On this machine: a `ray.cluster_utils.Cluster` of a head and two worker nodes, the shard
actors spread over them, the models and the REST daemon on Serve. A client thread adds
items (POST /items: the real path through the models), deletes some and searches by
photo, keeping its own record of every acknowledged write; a probe thread reads the
whole catalog straight from the shards and checks every complete answer against that
record. The faults come one after another:

    kill a shard actor | kill a model replica | remove a worker node | kill the coordinator
    | kill the REST front's replica | clients hanging up mid-request | rebalance to one more
    shard | stop everything and start again from the storage root

After each: the cluster must give a complete answer again, every acknowledged item is
there exactly once (ids and count checked against the client's record, and in the pages
of GET /items), no deleted item came back, and no answer during the outage was a wrong
complete one; requests may meanwhile answer `partial: true` or 503 with Retry-After.
"""
from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import random
import secrets
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import ray

from shards.errors import InvalidInput
from shards.query import Query

from .demo import SAMPLE_CATALOG, SAMPLE_QUERIES, serve_environment, start_server
from .runtime import COORDINATOR, open_cluster, shutdown_cluster
from .settings import Settings
from .shard_actor import NAMESPACE, actor_name

FAST_FAILURE_DETECTION = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                          "health_check_failure_threshold": 4}
# what the client may see during a fault; anything else (a 500, no answer, a 404 on
# deleting an acknowledged item) fails the run
ALLOWED_OUTCOMES = {"add ok", "add 503", "delete ok", "delete 503", "search complete", "search partial", "search 503"}
RESTART = "stop the whole cluster, start again from the storage root"
MAX_ITEMS = 700          # the probe reads everything with one k<=1000 query


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Record:
    """What the client knows: acknowledged items, acknowledged deletes, writes in flight."""

    def __init__(self):
        self.lock = threading.Lock()
        self.present: set[str] = set()
        self.deleted: set[str] = set()
        self.uncertain: set[str] = set()     # in flight, or never acknowledged

    def snapshot(self) -> tuple[frozenset, frozenset]:
        with self.lock:
            return frozenset(self.present), frozenset(self.uncertain)


class Client(threading.Thread):
    """Adds, deletes and searches over HTTP at its own pace, retrying writes on 503 (same id)."""

    def __init__(self, url: str, key: str, record: Record, seed: int = 0, first: int = 0):
        super().__init__(name="chaos-client", daemon=True)
        self.url, self.key, self.record = url, key, record
        self.rng = random.Random(seed)
        rows = list(csv.DictReader(open(SAMPLE_CATALOG / "styles.csv")))
        self.catalog = [(r["productDisplayName"], (SAMPLE_CATALOG / "images" / f"{r['id']}.jpg").read_bytes())
                        for r in rows[:40]]
        self.queries = [p.read_bytes() for p in sorted(SAMPLE_QUERIES.glob("*.jpg"))] or [self.catalog[0][1]]
        self.outcomes: Counter = Counter()
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self.turn = threading.Lock()   # held for each operation; a check takes it to pause the client
        self.n = first       # ids are never reused: a deleted id that is found again came back
        self.http = httpx.Client(timeout=120)

    def _write(self, kind: str, item_id: str, send) -> None:
        with self.record.lock:
            self.record.uncertain.add(item_id)
        for attempt in range(60):
            try:
                r = send()
            except httpx.HTTPError as exc:      # no answer: the write may or may not have happened
                self.outcomes[f"{kind} no answer"] += 1
                self.errors.append(f"{kind} {item_id}: {exc!r}")
                time.sleep(1)
                continue
            # a retried delete whose first try did land finds nothing to delete: that is success
            if r.status_code in (200, 201) or (kind == "delete" and attempt and r.status_code == 404):
                with self.record.lock:
                    self.record.uncertain.discard(item_id)
                    if kind == "add":
                        self.record.present.add(item_id)
                    else:
                        self.record.present.discard(item_id)
                        self.record.deleted.add(item_id)
                self.outcomes[f"{kind} ok"] += 1
                return
            if r.status_code == 503 and r.headers.get("retry-after"):
                self.outcomes[f"{kind} 503"] += 1
                time.sleep(min(2.0, float(r.headers["retry-after"])))
                continue
            self.outcomes[f"{kind} {r.status_code}"] += 1
            self.errors.append(f"{kind} {item_id}: {r.status_code} {r.text[:200]}")
            return
        # gave up: stays uncertain (a later check accepts it either way)

    def add(self) -> None:
        title, image = self.rng.choice(self.catalog)
        item_id = f"chaos-{self.n}"
        self._write("add", item_id, lambda: self.http.post(
            self.url + "/items", files={"image": ("p.jpg", image, "image/jpeg")},
            data={"title": title, "id": item_id}, headers={"X-API-Key": self.key}))

    def delete(self) -> None:
        with self.record.lock:
            if not self.record.present:
                return
            item_id = self.rng.choice(sorted(self.record.present))
        self._write("delete", item_id, lambda: self.http.delete(
            self.url + f"/items/{item_id}", headers={"X-API-Key": self.key}))

    def search(self) -> None:
        try:
            r = self.http.post(self.url + "/search", files={"image": ("q.jpg", self.rng.choice(self.queries),
                                                                      "image/jpeg")}, data={"k": "10"})
        except httpx.HTTPError as exc:
            self.outcomes["search no answer"] += 1
            self.errors.append(f"search: {exc!r}")
            return
        if r.status_code == 200:
            self.outcomes["search partial" if r.json()["partial"] else "search complete"] += 1
        elif r.status_code == 503 and r.headers.get("retry-after"):
            self.outcomes["search 503"] += 1
        else:
            self.outcomes[f"search {r.status_code}"] += 1
            self.errors.append(f"search: {r.status_code} {r.text[:200]}")

    def run(self) -> None:
        while not self.stop_event.is_set():
            with self.turn:
                step = self.n % 4
                with self.record.lock:
                    size = len(self.record.present)
                if step in (0, 1) and size < MAX_ITEMS:
                    self.add()
                elif step == 3 and size > 5:
                    self.delete()
                else:
                    self.search()
                self.n += 1


class Probe(threading.Thread):
    """Reads the whole catalog from the shards; a complete answer must match the client's record."""

    def __init__(self, cluster, record: Record, words: int, bins: int):
        super().__init__(name="chaos-probe", daemon=True)
        self.cluster, self.record = cluster, record
        self.query = Query(code=np.zeros(words, np.uint64), hist=np.ones(bins), k=1000)
        self.outcomes: Counter = Counter()
        self.wrong: list[str] = []
        self.stop_event = threading.Event()

    def check_once(self) -> bool:
        """One read; True when it was complete (and then it must have been right)."""
        p0, u0 = self.record.snapshot()
        try:
            r = self.cluster.search(self.query)
        except Exception as exc:   # the router itself never raises for a dead shard; count it anyway
            self.outcomes["error"] += 1
            self.wrong.append(f"probe raised {exc!r}")
            return False
        p1, u1 = self.record.snapshot()
        if r.partial:
            self.outcomes["partial"] += 1
            return False
        got = [h.id for h in r.hits]
        must, may = (p0 & p1) - u0 - u1, p0 | p1 | u0 | u1   # a write in flight may be either way
        problems = []
        if len(got) != len(set(got)):
            problems.append(f"{len(got) - len(set(got))} duplicates")
        if missing := must - set(got):
            problems.append(f"{len(missing)} acknowledged items missing, e.g. {sorted(missing)[:3]}")
        if extra := set(got) - may:
            problems.append(f"{len(extra)} items that should not be there, e.g. {sorted(extra)[:3]}")
        if problems:
            self.outcomes["wrong complete"] += 1
            self.wrong.append("; ".join(problems))
        else:
            self.outcomes["complete"] += 1
        return True

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.check_once()
            time.sleep(0.3)


def wait_until_schedulable(node_ids: list[str], timeout_s: float = 120) -> None:
    """Return once the head's scheduler knows each node. `Cluster.wait_for_nodes` asks the GCS,
    while SPREAD is decided by the head's raylet, whose view of nodes just added can lag on a slow
    machine: the shard actors then all land on the head. A task that must run on each node (hard
    node affinity) returns only once that node is known."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    here = ray.remote(num_cpus=0)(lambda: ray.get_runtime_context().get_node_id())
    got = ray.get([here.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
                   for n in node_ids], timeout=timeout_s)
    if got != list(node_ids):
        raise RuntimeError(f"tasks pinned to {node_ids} ran on {got}")


class Chaos:
    def __init__(self, storage: Path, shards: int = 4, settle_s: float = 5.0, recover_s: float = 180.0,
                 log=print):
        self.storage, self.shards, self.settle_s, self.recover_s, self.log = storage, shards, settle_s, recover_s, log
        self.key = secrets.token_urlsafe(12)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.record = Record()
        self.steps: list[dict] = []

    # ------------------------------------------------------------ the cluster
    def start(self, carry_on: tuple | None = None) -> None:
        from ray.cluster_utils import Cluster as RayTestCluster
        serve_environment()
        self.nodes = RayTestCluster(initialize_head=True, head_node_args={
            "num_cpus": 2, "_system_config": FAST_FAILURE_DETECTION})
        self.workers = [self.nodes.add_node(num_cpus=1) for _ in range(2)]
        self.nodes.wait_for_nodes()
        env = {k: os.environ[k] for k in ("FASHION_ASSETS",) if k in os.environ}
        ray.init(address=self.nodes.address, namespace=NAMESPACE, log_to_driver=False,
                 runtime_env={"env_vars": env} if env else None)
        wait_until_schedulable([w.node_id for w in self.workers])   # else the shards may all land on the head
        from shards.shard import ShardConfig
        self.cluster = open_cluster(self.storage, shards=self.shards, config=ShardConfig(bits=256, hist_bins=64),
                                    timeout_s=2.0)
        from ray import serve
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": self.port})
        start_server(Settings(storage=str(self.storage), samples=str(SAMPLE_QUERIES), port=self.port,
                              api_key=self.key, rate_limit=0, shard_timeout_s=2.0))
        cfg = self.cluster.coordinator_call("ready")["config"]
        self.client = Client(self.url, self.key, self.record, first=carry_on[0].n if carry_on else 0)
        self.probe = Probe(self.cluster, self.record, cfg["bits"] // 64, cfg["hist_bins"])
        if carry_on:   # after a restart the new client and probe carry on the old ones' counts
            old_client, old_probe = carry_on
            self.client.outcomes, self.client.errors = old_client.outcomes, old_client.errors
            self.probe.outcomes, self.probe.wrong = old_probe.outcomes, old_probe.wrong
        self.client.start()
        self.probe.start()

    def stop(self) -> None:
        from ray import serve
        for t in (self.client, self.probe):
            t.stop_event.set()
            t.join(timeout=180)
        with contextlib.suppress(Exception):
            serve.shutdown()
        with contextlib.suppress(Exception):
            shutdown_cluster()
        self.cluster.close()
        ray.shutdown()
        self.nodes.shutdown()

    # ------------------------------------------------------------ checks
    def wait_recovered(self) -> float:
        """Seconds until the shards give a complete answer and the REST API a 200 again."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.recover_s:
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.post(self.url + "/search", files={"image": ("q.jpg", self.client.queries[0],
                                                                      "image/jpeg")}, timeout=60)
                if r.status_code == 200 and not r.json()["partial"] and self.probe.check_once():
                    return time.monotonic() - t0
            time.sleep(0.5)
        raise TimeoutError(f"no complete answer within {self.recover_s:.0f} s")

    def verify(self) -> dict:
        """The client pauses between operations; every acknowledged item there once, the count
        right, deletes gone. Writes the client gave up on stay uncertain and count either way."""
        with self.client.turn:
            present, uncertain = self.record.snapshot()
            r = self.cluster.search(self.probe.query)
            got = [h.id for h in r.hits]
            found = self.cluster.existing(sorted(present))
            with self.record.lock:
                deleted = sorted(self.record.deleted)
            came_back = [i for i, ok in zip(deleted, self.cluster.existing(deleted)) if ok]
            count = httpx.get(self.url + "/stats", timeout=60).json()["items"]
            listed = self._listed()
        lost = sorted(i for i, ok in zip(sorted(present), found) if not ok and i not in uncertain)
        unknown = set(got) - present - uncertain
        # GET /items, paged: the same items, each once
        listing_wrong = (len(listed) != len(set(listed)) or not present - uncertain <= set(listed)
                         or bool(set(listed) - present - uncertain))
        return {"acknowledged": len(present), "in_flight": len(uncertain), "found": len(set(got)),
                "lost": len(lost), "duplicates": len(got) - len(set(got)), "unexpected": len(unknown),
                "deleted_came_back": len(came_back), "stats_items": count, "partial": r.partial,
                "listed": len(listed), "listing_wrong": listing_wrong,
                "ok": (not lost and len(got) == len(set(got)) and not unknown and not came_back and not r.partial
                       and len(present - uncertain) <= count <= len(present | uncertain) and not listing_wrong)}

    def _listed(self) -> list:
        """Every item id GET /items lists, page by page (50 a page, so a listing takes several)."""
        ids, cursor = [], None
        while True:
            params = {"limit": "50", **({"cursor": cursor} if cursor else {})}
            page = httpx.get(self.url + "/items", params=params, timeout=60).raise_for_status().json()
            ids += [it["id"] for it in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                return ids

    def step(self, name: str, fault) -> dict:
        before_c, before_p = Counter(self.client.outcomes), Counter(self.probe.outcomes)
        self.log(f"fault: {name}")
        t0 = time.monotonic()
        detail = fault() or {}
        try:
            recovered = self.wait_recovered()
        except TimeoutError as exc:
            recovered, detail["error"] = None, str(exc)
        time.sleep(self.settle_s)
        check = self.verify()
        result = {"fault": name, **detail, "recovered_s": None if recovered is None else round(recovered, 1),
                  "took_s": round(time.monotonic() - t0, 1),
                  "client": dict(self.client.outcomes - before_c), "probe": dict(self.probe.outcomes - before_p),
                  "check": check,
                  "survived": recovered is not None and check["ok"] and not detail.get("unreadable_after")}
        self.log(f"  {result}")
        self.steps.append(result)
        return result

    # ------------------------------------------------------------ faults
    def kill_shard(self) -> dict:
        name = sorted(self.cluster.router.clients)[0]
        ray.kill(ray.get_actor(actor_name(name), namespace=NAMESPACE), no_restart=False)
        return {"shard": name}

    def _serve_replica(self, deployment: str) -> str:
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == "serve" and deployment in a["name"]]
        if not names:
            raise RuntimeError(f"no {deployment} replica")
        ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=False)
        return names[0]

    def kill_model_replica(self) -> dict:
        return {"replica": self._serve_replica("FeatureReplica")}

    def kill_front(self) -> dict:
        return {"replica": self._serve_replica("Frontend")}

    def remove_node(self) -> dict:
        placed = {n: i["node"] for n, i in self.cluster.coordinator_call("ready")["shards"].items()}
        by_id = {w.node_id: w for w in self.workers}
        counts = Counter(node for node in placed.values() if node in by_id)
        victim = max(counts, key=counts.get) if counts else self.workers[0].node_id
        self.nodes.remove_node(by_id[victim])
        self.workers.remove(by_id[victim])
        return {"shards_on_it": sorted(s for s, n in placed.items() if n == victim)}

    def clients_give_up(self) -> dict:
        """Bursts of reads and searches whose clients hang up after 5-200 ms: Serve cancels each
        request, and Ray every actor call made under it. Then every acknowledged item must
        still be read through the coordinator (`verify`), and through the REST API here."""
        ids = sorted(self.record.snapshot()[0])[:40]
        photo = self.client.queries[0]

        async def burst(timeout_s: float) -> int:
            async with httpx.AsyncClient(timeout=timeout_s) as c:
                calls = ([c.get(f"{self.url}/items/{i}") for i in ids]
                         + [c.get(f"{self.url}/items/{i}/image") for i in ids]
                         + [c.post(self.url + "/search", files={"image": ("q.jpg", photo, "image/jpeg")})
                            for _ in range(5)])
                answers = await asyncio.gather(*calls, return_exceptions=True)
            return sum(isinstance(a, httpx.TimeoutException) for a in answers)

        gone = sum(asyncio.run(burst(t)) for t in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2))
        with self.client.turn, httpx.Client(timeout=60) as c:   # the client paused: nothing deleted meanwhile
            present, uncertain = self.record.snapshot()
            unread = {i: r.status_code for i in sorted(present - uncertain)
                      if (r := c.get(f"{self.url}/items/{i}")).status_code != 200}
        return {"requests": 6 * (2 * len(ids) + 5), "given_up": gone, "unreadable_after": len(unread),
                "unreadable_examples": dict(list(unread.items())[:3])}

    def kill_coordinator(self) -> dict:
        ray.kill(ray.get_actor(COORDINATOR, namespace=NAMESPACE), no_restart=False)
        return {}

    def rebalance(self) -> dict:
        n = len(self.cluster.router.clients) + 1
        report = self.cluster.rebalance(n)
        return {"to_shards": n, "moved": report.get("moved_items")}

    def restart_everything(self) -> dict:
        self.client.stop_event.set()
        self.probe.stop_event.set()
        self.client.join(timeout=180)
        self.probe.join(timeout=180)
        old = (self.client, self.probe)
        self.stop()
        self.start(carry_on=old)
        return {}

    def faults(self) -> dict:
        """Every fault of the script, by name, in the order it runs them."""
        return {"kill a shard actor": self.kill_shard,
                "kill a model replica (features)": self.kill_model_replica,
                "remove a worker node": self.remove_node,
                "kill the coordinator actor": self.kill_coordinator,
                "kill the REST front's replica": self.kill_front,
                "clients hang up mid-request": self.clients_give_up,
                "rebalance to one more shard under load": self.rebalance,
                RESTART: self.restart_everything}

    def run(self, warmup_s: float = 10.0, skip: tuple = ()) -> dict:
        if unknown := set(skip) - set(self.faults()):
            raise InvalidInput(f"no such fault: {sorted(unknown)}")
        faults = {name: f for name, f in self.faults().items() if name not in skip}
        t0 = time.monotonic()
        self.start()
        self.log(f"cluster up in {time.monotonic() - t0:.0f} s ({self.url}); client warming up for {warmup_s:.0f} s")
        time.sleep(warmup_s)
        try:
            for name, fault in faults.items():
                self.step(name, fault)
        finally:
            self.stop()
        c, p = self.client.outcomes, self.probe.outcomes
        return {
            "ok": (all(s["survived"] for s in self.steps) and not p["wrong complete"]
                   and set(c) <= ALLOWED_OUTCOMES),
            "faults_injected": len(self.steps), "faults_survived": sum(s["survived"] for s in self.steps),
            "items_lost": sum(s["check"]["lost"] for s in self.steps),
            "duplicates": sum(s["check"]["duplicates"] for s in self.steps),
            "wrong_complete_answers": p["wrong complete"],
            "client_outcomes": dict(c),
            "probe_reads": dict(p), "client_errors": self.client.errors[:20], "wrong": self.probe.wrong[:20],
            "steps": self.steps, "seconds": round(time.monotonic() - t0, 1),
        }


def run_chaos(storage: str | os.PathLike, settle_s: float = 5.0, warmup_s: float = 10.0, log=print,
              skip: tuple = ()) -> dict:
    """`skip`: names of faults not to inject (`Chaos.faults`); every one runs by default."""
    storage = Path(storage)
    if storage.exists() and any(storage.iterdir()):
        raise InvalidInput(f"{storage} is not empty: chaos needs a fresh storage root")
    return Chaos(storage, settle_s=settle_s, log=log).run(warmup_s=warmup_s, skip=skip)
