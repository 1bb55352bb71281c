"""Benchmarks of the models and of the REST daemon."""
from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]


def bench_inference(reps: int = 20) -> dict:
    """The query path: attributes + ROI + features, batch 1 and 32, on the GPU when torch sees one
    (`device` in the output), else on 2 CPU threads."""
    import torch
    from PIL import Image
    from models.pipeline import Pipeline
    torch.set_num_threads(2)
    p = Pipeline.load()
    samples = sorted((PROJECT / "demo" / "samples").glob("*.jpg"))
    imgs = [Image.open(s).convert("RGB") for s in samples]
    p.query(imgs[0])
    lat, stages = [], []
    for i in range(reps):
        t = time.perf_counter()
        a = p.query(imgs[i % len(imgs)])
        lat.append((time.perf_counter() - t) * 1e3)
        stages.append(a.timings_ms)
    batch = [imgs[i % len(imgs)] for i in range(32)]
    t = time.perf_counter()
    p.analyse_batch(batch)
    b32 = time.perf_counter() - t
    catalog_photos = sorted((PROJECT / "demo" / "catalog" / "images").glob("*.jpg"))[:32]
    cat_imgs = [Image.open(x).convert("RGB") for x in catalog_photos]
    t = time.perf_counter()
    p.items(cat_imgs, ["untitled"] * len(cat_imgs))
    items32 = time.perf_counter() - t
    x = p._attribute_input(batch)
    with torch.no_grad():
        t = time.perf_counter()
        p.attributes.generate(x[:1], beam=p.beam)
        a1 = time.perf_counter() - t
        t = time.perf_counter()
        p.attributes.generate(x, beam=p.beam)
        a32 = time.perf_counter() - t
    return {"query_p50_ms": statistics.median(lat), "query_p99_ms": float(np.percentile(lat, 99)),
            "stage_p50_ms": {k: statistics.median(s[k] for s in stages) for k in stages[0]},
            "queries_per_s_batch32": 32 / b32, "catalog_items_per_s_batch32": len(cat_imgs) / items32,
            "attribute_images_per_s_batch1": 1 / a1, "attribute_images_per_s_batch32": 32 / a32,
            "detector": p.detector is not None, "threads": 2, "device": str(p.device)}


def bench_serve(requests_per_client: int = 30, clients=(1, 4), roi: str = "detector", phone: bool = False) -> dict:
    """POST /search with real street photos against the demo's server, 1 and 4 clients, asking for
    the ROI rule `roi` (the detector's box, or `match`: the catalog picks among its top regions).
    `phone`: each photo enlarged to 4032 px and saved as a phone saves it (benchmarks/photo_bench.py)."""
    import httpx
    import ray
    from ray import serve
    from cluster.demo import demo_settings, run_demo
    from cluster.runtime import shutdown_cluster
    samples = [s.read_bytes() for s in sorted((PROJECT / "demo" / "samples").glob("*.jpg"))]
    if phone:
        from benchmarks.photo_bench import phone_photo
        samples = [phone_photo(s) for s in samples]
    with tempfile.TemporaryDirectory() as storage:
        t0 = time.perf_counter()
        report = run_demo(demo_settings("127.0.0.1", 8765, storage, None), log=lambda s: None, block=False)
        ready_s = time.perf_counter() - t0
        url = report["url"] + "search"
        httpx.post(url, files={"image": ("q.jpg", samples[0], "image/jpeg")}, data={"roi": roi}, timeout=120)
        out = {"roi": roi, "phone_photos": phone, "photo_bytes_p50": statistics.median(map(len, samples)),
               "ready_s": ready_s, "indexed": report["indexed"], "index_items_per_s": report["items_per_s"]}
        try:
            for n in clients:
                lat: list[float] = []
                stages: list[dict] = []     # the server's own timings_ms of each answer
                errors = [0]

                def client(seed):
                    with httpx.Client(timeout=120) as h:
                        for i in range(requests_per_client):
                            t = time.perf_counter()
                            photo = samples[(seed + i) % len(samples)]
                            r = h.post(url, files={"image": ("q.jpg", photo, "image/jpeg")}, data={"roi": roi})
                            lat.append((time.perf_counter() - t) * 1e3)
                            errors[0] += r.status_code != 200
                            if r.status_code == 200:
                                stages.append(r.json()["timings_ms"])

                t = time.perf_counter()
                threads = [threading.Thread(target=client, args=(c,)) for c in range(n)]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                wall = time.perf_counter() - t
                out[f"clients_{n}"] = {"p50_ms": statistics.median(lat), "p99_ms": float(np.percentile(lat, 99)),
                                       "qps": len(lat) / wall, "errors": errors[0], "requests": len(lat),
                                       "server_p50_ms": {k: statistics.median(s[k] for s in stages) for k in stages[0]}
                                       if stages else {}}
        finally:
            serve.shutdown()
            shutdown_cluster()
            ray.shutdown()
    one, many = out[f"clients_{clients[0]}"], out[f"clients_{clients[-1]}"]
    out.update({"p50_ms": one["p50_ms"], "p99_ms": one["p99_ms"], "qps": one["qps"], "clients": list(clients),
                "scaling": many["qps"] / one["qps"]})
    return out
