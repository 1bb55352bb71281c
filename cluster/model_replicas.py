"""The models as Ray Serve deployments: replica actors with dynamic batching.

Three deployments, as in the paper's serving path: attributes (title model +
CNN-LSTM), ROI (the guided detector, when shipped) and features (binary code +
colour histogram). Each asks for a fraction of a GPU when the cluster has GPUs
and runs on CPU otherwise; `@serve.batch` gathers concurrent requests into one
forward pass. Images travel between deployments as uint8 arrays.
"""
from __future__ import annotations

import os

import numpy as np
import ray
from PIL import Image
from ray import serve

BATCH = int(os.environ.get("FASHION_MODEL_BATCH", "16"))
BATCH_WAIT_S = float(os.environ.get("FASHION_BATCH_WAIT_S", "0.005"))


def replica_options() -> dict:
    gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
    return {"num_cpus": 0, "num_gpus": 0.25 if gpus else 0}


def _pipeline():
    import torch
    from models.pipeline import Pipeline
    torch.set_num_threads(max(1, int(os.environ.get("FASHION_TORCH_THREADS", "1"))))
    return Pipeline.load()


@serve.deployment
class AttributeReplica:
    def __init__(self):
        self.pipeline = _pipeline()

    def categories(self) -> list[str]:
        return [t.split("=", 1)[1] for t in self.pipeline.taxonomy.category_tokens()]

    def category_groups(self) -> dict[str, list[str]]:
        return self.pipeline.taxonomy.category_groups()

    def taxonomy(self) -> dict:
        """The vocabulary these networks read (models/taxonomy.py), as its file holds it."""
        return self.pipeline.taxonomy.to_json()

    def read_titles(self, titles: list[str]) -> list:
        """Per title: its category (or None), the gender and colour it states, its belief over the
        categories (models/text_pipeline.py TitleReading)."""
        return self.pipeline.read_titles(titles)

    @serve.batch(max_batch_size=BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def recognise(self, items: list[tuple[np.ndarray, str | None, bool, dict | None, dict | None]]
                        ) -> list[tuple[list, list]]:
        """(attributes, runners-up) per (crop, category, runners-up wanted, what its title states, its
        title's belief over the categories): [(token, probability)] each.

        A catalog item's runners-up go down to ALTERNATIVE_P (it is indexed under them,
        models/pipeline.py index_tokens), a query's to HEDGE_P (its runner-up category is
        searched too, hedge_terms).
        """
        import torch

        from models.pipeline import ALTERNATIVE_P, HEDGE_P
        imgs = [Image.fromarray(it[0]) for it in items]
        with torch.no_grad():
            read = self.pipeline.attributes.generate_with_alternatives(
                self.pipeline._attribute_input(imgs), beam=self.pipeline.beam, categories=[it[1] for it in items],
                min_p=min(ALTERNATIVE_P, HEDGE_P), stated=[it[3] for it in items], beliefs=[it[4] for it in items])
        return [(seq, [(t, p) for t, p in alts if p >= (ALTERNATIVE_P if it[2] else HEDGE_P)])
                for (seq, alts), it in zip(read, items)]


@serve.deployment
class RoiReplica:
    def __init__(self):
        self.pipeline = _pipeline()

    @serve.batch(max_batch_size=BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def locate(self, items: list[tuple[np.ndarray, str | None]]) -> list[tuple | None]:
        """(ROI, where its appearance is read) per photo, or None (models/detector.py appearance_box)."""
        det = self.pipeline.detector
        if det is None:
            return [None] * len(items)
        boxes = [det.best_box(Image.fromarray(a), self.pipeline.detector_classes(c)) for a, c in items]
        return [None if b is None else (b, det.appearance_box(b)) for b in boxes]

    @serve.batch(max_batch_size=BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def regions(self, items: list[tuple[np.ndarray, str | None]]) -> list[list[tuple]]:
        """The top guided detections of each photo, each with its appearance box (none without a detector)."""
        from models.pipeline import REGIONS
        det = self.pipeline.detector
        if det is None:
            return [[] for _ in items]
        return [[(b, det.appearance_box(b)) for b in det.boxes(Image.fromarray(a), self.pipeline.detector_classes(c),
                                                                REGIONS)] for a, c in items]


@serve.deployment
class FeatureReplica:
    def __init__(self):
        self.pipeline = _pipeline()

    @serve.batch(max_batch_size=BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def describe(self, crops: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        from models.colour import hsv_histogram
        imgs = [Image.fromarray(c) for c in crops]
        codes = self.pipeline.codebook.encode(self.pipeline._features(imgs))
        return [(codes[i], hsv_histogram(imgs[i], self.pipeline.hist_bins)) for i in range(len(imgs))]
