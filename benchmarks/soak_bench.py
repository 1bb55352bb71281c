"""A bounded soak: the demo on loopback, a steady rate of mixed reads and writes, for minutes.

Requests leave on a fixed schedule (open loop: a slow answer does not slow the arrivals),
70% searches by photo, 20% adds of catalog photos under new ids, 10% deletes of items the
soak added. Recorded: every status, latency percentiles per kind, and the resident memory
of the whole local Ray session (this process and all its child processes) every 10 s.
Memory is "flat" when the RSS at the end is within 10% of the RSS after the warm-up.
"""
from __future__ import annotations

import csv
import random
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]


def session_rss() -> int:
    """Bytes resident in this process and every process it started (GCS, raylet, workers)."""
    import psutil
    me = psutil.Process()
    total = 0
    for p in [me, *me.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _percentiles(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "p50_ms": float(np.percentile(xs, 50)), "p99_ms": float(np.percentile(xs, 99)),
            "max_ms": float(max(xs))}


def bench_soak(minutes: float = 10.0, rate: float = 3.0, warmup_s: float = 60.0, log=print) -> dict:
    import httpx
    import ray
    from ray import serve
    from cluster.demo import demo_settings, run_demo
    from cluster.runtime import shutdown_cluster
    catalog = PROJECT / "demo" / "catalog"
    rows = list(csv.DictReader(open(catalog / "styles.csv")))
    items = [(r["productDisplayName"], (catalog / "images" / f"{r['id']}.jpg").read_bytes()) for r in rows[:60]]
    samples = [s.read_bytes() for s in sorted((PROJECT / "demo" / "samples").glob("*.jpg"))]
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as storage:
        settings = demo_settings("127.0.0.1", 8766, storage, None)
        report = run_demo(settings, log=lambda s: None, block=False)
        url, key = report["url"].rstrip("/"), settings.api_key
        http = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=16))
        lat: dict[str, list[float]] = {"search": [], "add": [], "delete": []}
        status: Counter = Counter()
        errors: list[str] = []
        added: list[str] = []
        lock = threading.Lock()

        def one(kind: str, n: int) -> None:
            t = time.perf_counter()
            try:
                if kind == "search":
                    r = http.post(url + "/search", files={"image": ("q.jpg", samples[n % len(samples)], "image/jpeg")})
                elif kind == "add":
                    title, image = items[n % len(items)]
                    r = http.post(url + "/items", files={"image": ("p.jpg", image, "image/jpeg")},
                                  data={"title": title, "id": f"soak-{n}"}, headers={"X-API-Key": key})
                    if r.status_code == 201:
                        with lock:
                            added.append(f"soak-{n}")
                else:
                    with lock:
                        victim = added.pop(rng.randrange(len(added))) if added else None
                    if victim is None:
                        return
                    r = http.delete(url + f"/items/{victim}", headers={"X-API-Key": key})
                code = r.status_code
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            with lock:
                lat[kind].append((time.perf_counter() - t) * 1e3)
                status[f"{kind} {code}"] += 1
                if code not in (200, 201):
                    errors.append(f"{kind}: {code}")

        memory: list[tuple[float, int]] = []
        t0 = time.monotonic()
        end = t0 + minutes * 60
        n = 0
        with ThreadPoolExecutor(max_workers=16) as pool:
            next_mem = t0
            while (now := time.monotonic()) < end:
                if now >= next_mem:
                    memory.append((now - t0, session_rss()))
                    next_mem += 10
                    log(f"  {now - t0:5.0f} s  {n} requests  RSS {memory[-1][1] / 2**20:.0f} MiB  {dict(status)}")
                x = rng.random()
                kind = "search" if x < 0.7 else "add" if x < 0.9 else "delete"
                pool.submit(one, kind, n)
                n += 1
                time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
        memory.append((time.monotonic() - t0, session_rss()))
        final_items = http.get(url + "/stats").json()["items"]
        serve.shutdown()
        shutdown_cluster()
        ray.shutdown()
    after_warmup = next(m for t, m in memory if t >= warmup_s) if memory[-1][0] >= warmup_s else memory[0][1]
    total = sum(status.values())
    return {
        "minutes": minutes, "rate_per_s": rate, "requests": total, "errors": len(errors),
        "error_rate": len(errors) / max(1, total), "status": dict(status), "first_errors": errors[:10],
        "latency": {k: _percentiles(v) for k, v in lat.items()},
        "rss_mib_after_warmup": after_warmup / 2**20, "rss_mib_end": memory[-1][1] / 2**20,
        "rss_end_over_warmup": memory[-1][1] / after_warmup,
        "rss_mib_series": [(round(t), round(m / 2**20)) for t, m in memory],
        "catalog_items_end": final_items, "catalog_items_start": report["indexed"] + report["skipped_existing"],
    }
