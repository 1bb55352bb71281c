"""Batch query jobs: a file of queries in, a JSONL file of results out.

QUERIES is a CSV (columns image[, category][, box]) or JSONL ({"image": path,
"category": ..., "box": "x,y,w,h"}). Attached to a Ray cluster (--address), the
job is submitted through Ray's job submission API and runs there; otherwise it
runs in this process against a local cluster on the storage root.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from shards.errors import InvalidInput
from shards.query import Query

from .rest import parse_box


def read_queries(path: str) -> list[dict]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    if p.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise InvalidInput(f"{path} has no queries")
    for r in rows:
        if not r.get("image"):
            raise InvalidInput(f"{path}: every query needs an 'image' path, got {r!r}")
        r["image"] = str((p.parent / r["image"]) if not Path(r["image"]).is_absolute() else r["image"])
    return rows


def run_batch(cluster, queries_path: str, out_path: str, k: int = 20, batch: int = 16, log=print) -> dict:
    from models.data import decode_image
    from models.pipeline import Pipeline
    rows = read_queries(queries_path)
    pipeline = Pipeline.load()
    t0 = time.perf_counter()
    done = errors = 0
    with open(out_path, "w") as out:
        for i in range(0, len(rows), batch):
            part = rows[i: i + batch]
            good, images = [], []
            for r in part:
                try:
                    images.append(decode_image(r["image"]))
                    good.append(r)
                except InvalidInput as exc:
                    out.write(json.dumps({"query": r, "error": str(exc)}) + "\n")
                    errors += 1
            if not good:
                continue
            try:
                analyses = pipeline.analyse_batch(images, [r.get("category") or None for r in good],
                                                  [parse_box(r.get("box")) for r in good])
            except InvalidInput:  # one bad category or box: fall back to one at a time
                analyses = []
                for r, im in zip(good, images):
                    try:
                        analyses.append(pipeline.query(im, r.get("category") or None, parse_box(r.get("box"))))
                    except InvalidInput as e:
                        analyses.append(e)
            queries = [Query(code=a.code, hist=a.hist, k=k, w_colour=pipeline.w_colour, **a.query_terms())
                       for a in analyses if not isinstance(a, Exception)]
            results = iter(cluster.search_batch(queries))
            for r, a in zip(good, analyses):
                if isinstance(a, Exception):
                    out.write(json.dumps({"query": r, "error": str(a)}) + "\n")
                    errors += 1
                    continue
                res = next(results)
                out.write(json.dumps({"query": r, "category": a.category, "roi": a.roi,
                                      "attributes": [{"token": t, "probability": p} for t, p in a.attributes],
                                      "relaxed": list(res.relaxed), "widened": list(res.widened),
                                      "partial": res.partial,
                                      "results": [h.to_dict() for h in res.hits]}) + "\n")
                done += 1
            log(f"{done + errors}/{len(rows)} queries ({done / (time.perf_counter() - t0):.1f}/s)")
    return {"queries": len(rows), "answered": done, "errors": errors, "out": out_path,
            "seconds": time.perf_counter() - t0}


def submit_job(address: str, argv: list[str]) -> dict:
    """Run this same batch command on the cluster through Ray's job submission API."""
    from ray.job_submission import JobSubmissionClient
    client = JobSubmissionClient(address)
    job = client.submit_job(entrypoint="fashion-search " + " ".join(argv + ["--in-process"]))
    return {"submitted": job, "address": address, "follow": f"ray job logs --address {address} -f {job}"}
