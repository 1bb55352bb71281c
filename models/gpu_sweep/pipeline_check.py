"""The query path on a GPU against the same path on the CPU, same weights, same photos.

    python models/gpu_sweep/pipeline_check.py [cuda|cpu]     (after prep.py; prints one JSON object)

A replica given a GPU runs `Pipeline.load()` on it (models/pipeline.py). This reads the
demo's street photos and catalog photos both ways and reports how often the two agree on
the attributes and on the ROI, how many code bits differ, and the GPU's latency. The
CPU run is the oracle: float arithmetic differs between the two, so bits near a
threshold may flip, but the attributes and boxes should agree.
"""
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from models.pipeline import Pipeline  # noqa: E402
from models.train_detector import iou  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def corners(roi) -> np.ndarray:
    """(x, y, w, h) -> [[x0, y0, x1, y1]], as train_detector.iou takes boxes."""
    x, y, w, h = roi
    return np.array([[x, y, x + w, y + h]], np.float64)


def main() -> None:
    device = sys.argv[1] if len(sys.argv) > 1 else "cuda"     # "cpu": a dry run of this script
    photos = sorted((ROOT / "demo" / "samples").glob("*.jpg"))
    photos += sorted((ROOT / "demo" / "catalog" / "images").glob("*.jpg"))[:26]
    imgs = [Image.open(p).convert("RGB") for p in photos]
    cpu, gpu = Pipeline.load(device="cpu"), Pipeline.load(device=device)
    same_attrs, box_iou, bits, prob_gap = [], [], [], []
    for im in imgs:
        a, b = cpu.query(im), gpu.query(im)
        same_attrs.append([t for t, _ in a.attributes] == [t for t, _ in b.attributes])
        prob_gap += [abs(p - q) for (_, p), (_, q) in zip(a.attributes, b.attributes)]
        box_iou.append(float(iou(corners(a.roi), corners(b.roi))[0, 0]))
        bits.append(int(np.unpackbits(np.bitwise_xor(a.code, b.code).view(np.uint8)).sum()))
    gpu.query(imgs[0])
    lat = []
    for i in range(40):
        t = time.perf_counter()
        gpu.query(imgs[i % len(imgs)])
        lat.append((time.perf_counter() - t) * 1e3)
    t = time.perf_counter()
    gpu.analyse_batch([imgs[i % len(imgs)] for i in range(32)])
    b32 = time.perf_counter() - t
    print(json.dumps({
        "photos": len(imgs), "device": torch.cuda.get_device_name(0) if device == "cuda" else device,
        "same_attributes": float(np.mean(same_attrs)), "max_probability_gap": float(max(prob_gap)),
        "roi_iou_min": float(min(box_iou)), "roi_iou_mean": float(np.mean(box_iou)),
        "code_bits_differing_max": max(bits), "code_bits_differing_mean": float(np.mean(bits)), "bits": cpu.bits,
        "query_p50_ms": statistics.median(lat), "queries_per_s_batch32": 32 / b32}))


if __name__ == "__main__":
    main()
