"""The offline path of one catalog item and the online path of one query image (no Ray).

    item  = image + title -> category (title model) -> ROI -> guided attributes -> code + histogram
    query = image (+ category from the user, + box from the user) -> the same

The ROI comes before the attributes: the detector (guided by the category when one
is known) or the user's box picks the garment, and the attributes are read inside it.

Options of a query (paper section 4): (1) no category: the attribute model picks
it; (2) the user names the category: generation is guided by it; (3) the user
draws the box: the detector is skipped. Without a box and without a detector the
ROI is the whole image, and the answer says so.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shards.errors import InvalidInput

from .attributes import AttributeModel, normalise
from .colour import DEFAULT_BINS, check_box, hsv_histogram
from .data import ASSETS, Photo, as_photo
from .features import CodeBook, FeatureExtractor, load_features
from .framing import on_square, scale_box
from .text import TitleClassifier
from .text_pipeline import TitleReading, read_titles

# Attributes at least this probable are required (relaxable); the rest optional. Tuned on
# the validation split (200 hard queries, models/RESULTS.md), last with the runners-up in the
# index and before the scan budget below: 0.8 / 0.85 / 0.9 / 0.95 found the product first
# 0.745 / 0.755 / 0.755 / 0.775 of the time (default ROI), scanning 3.4 / 3.7 / 4.9 / 6.5 % of
# the catalog; the test split scans ~0.7 points more, so 0.85 is the most found within 5 %.
REQUIRED_P = 0.85
REGIONS = 10          # detections tried as the ROI when the catalog picks it (Pipeline.regions)
# A catalog item is also indexed under each field's runner-up values read with at least this
# probability (index_tokens). Tuned on the validation split (200 hard queries, models/RESULTS.md):
# 0.3 / 0.2 / 0.1 / 0.05 found the product first 0.73 / 0.745 / 0.755 / 0.76 of the time with the
# detector's ROI (0.725 without), scanning 3.4 / 3.5 / 3.7 / 4.0 % of the catalog (3.2 % without).
ALTERNATIVE_P = 0.1
CATEGORY_FIELD = "articleType"   # one per item: a shard's partition field (ShardConfig.partition_field)
# The fields that say what an item is. A query always requires those it reads sure enough; the
# other sure ones (colour, season, usage) only narrow a scan that would pass SCAN_BUDGET of the
# catalog (shards/query.py). Picked on the validation split (models/RESULTS.md): requiring every
# sure token scanned 3.9 % of the catalog but cut category-level mAP to 0.49 (0.63 unfiltered);
# only the what-it-is ones, 8.0 % and 0.80; a budget of 10 %, 4.9 % and 0.66.
WHAT_IT_IS = ("masterCategory", "articleType", "subCategory", "gender")
SCAN_BUDGET = 0.1
# A query that requires a category the model read itself also searches the runner-up category
# when the model gave it at least this probability at that step (hedge_terms); the runner-up's
# hits that beat all of the read category's come first (models/hedge.py). Sibling categories
# (Casual / Sports Shoes, Kurtas / Kurtis) are read wrongly with p >= REQUIRED_P on street crops,
# and a required category is a conjunct. Picked on the validation split (models/RESULTS.md):
# 0.1 / 0.07 / 0.06 / 0.05 found the product first in 0.825 / 0.825 / 0.825 / 0.83 of 200 hard
# queries (0.815 without), scanning 4.96 / 4.99 / 5.03 / 5.07 % of the catalog for studio photos.
HEDGE_P = 0.07


@dataclass
class Analysis:
    category: str | None                       # articleType value
    category_source: str                       # "user", "title", "title and photo", "auto"
    attributes: list[tuple[str, float]]        # (token, probability) in field order
    roi: tuple[int, int, int, int]             # x, y, w, h
    roi_source: str                            # "user", "detector", "whole image"
    code: np.ndarray                           # (B/64,) uint64
    hist: np.ndarray                           # (bins,) float, sums to 1
    timings_ms: dict = field(default_factory=dict)
    # runners-up of each generated field: p >= ALTERNATIVE_P for a catalog item, HEDGE_P for a query
    alternatives: list[tuple[str, float]] = field(default_factory=list)

    def index_tokens(self) -> list[str]:
        """The tokens a catalog item is indexed under (see index_tokens)."""
        return index_tokens(self.attributes, self.alternatives)

    def query_terms(self) -> dict:
        """The Query fields its attributes give (query_terms); a category counts as given unless
        the model read it itself."""
        return query_terms(self.attributes, None if self.category_source == "auto" else self.category)

    def hedge_terms(self) -> dict | None:
        """The Query fields of the search for its runner-up category (hedge_terms), or None."""
        return hedge_terms(self.attributes, self.alternatives,
                           None if self.category_source == "auto" else self.category)


def index_tokens(attributes: list[tuple[str, float]], alternatives: list[tuple[str, float]]) -> list[str]:
    """An item's read tokens, then the runners-up of its fields read with p >= ALTERNATIVE_P.

    A query requires only what it reads with p >= REQUIRED_P, on a street crop; the
    catalog's own read, on a studio photo, is a guess too (usage Casual or Sports, a
    Topwear or Innerwear subcategory). Indexing the close second values as well keeps a
    product whose read differs from the query's from being filtered out, for a little
    more of the catalog scanned. Never a second category: an item lives in one block.
    """
    tokens = [t for t, _ in attributes]
    seen = set(tokens)
    for t, p in alternatives:
        if p >= ALTERNATIVE_P and t not in seen and not t.startswith(CATEGORY_FIELD + "="):
            tokens.append(t)
            seen.add(t)
    return tokens


def query_terms(attributes: list[tuple[str, float]], given_category: str | None = None) -> dict:
    """The Query fields of a query from its recognised attributes: required, optional, widen, scan_budget.

    A category given by the user or by the seller's title leads the required ones
    whatever its probability. Every other token, the category the model read itself
    included, is required only when read with p >= REQUIRED_P; the rest only add to a
    hit's score. A category the model read on a street crop with p 0.6 must not exclude
    the product when it is wrong. The required ones that say what the item is come
    first (most confident first), then the sure colour, season or usage: the narrowing
    tokens (`widen` of them), kept only while the scan would pass SCAN_BUDGET of the
    catalog, and relaxed before a category.
    """
    forced = f"{CATEGORY_FIELD}={given_category}" if given_category else None
    ranked = sorted(((p, t) for t, p in attributes if t != forced), reverse=True)
    sure = [t for p, t in ranked if p >= REQUIRED_P]
    what = [t for t in sure if t.split("=", 1)[0] in WHAT_IT_IS]
    narrowing = [t for t in sure if t not in what]
    return {"required": tuple(([forced] if forced else []) + what + narrowing),
            "optional": tuple(t for p, t in ranked if p < REQUIRED_P),
            "widen": len(narrowing), "scan_budget": SCAN_BUDGET}


def hedge_terms(attributes: list[tuple[str, float]], alternatives: list[tuple[str, float]],
                given_category: str | None = None) -> dict | None:
    """The Query fields of a second search, for the runner-up category, or None (no hedge).

    Only a category the model read itself and required (p >= REQUIRED_P) is hedged: a
    given one is what the query means, and an unsure one is not required anyway. The
    runner-up (the most probable other category at that step, p >= HEDGE_P) is a hard
    filter of the hedge, so relaxing never widens it past that category; masterCategory
    and subCategory are left out, since they follow the category in the taxonomy's tree
    and the runner-up's may differ. The other terms are the query's own, but the sure
    colour, season or usage always narrow the hedge (widen 0): a second category is
    scanned for the photo's very product, not to fill a budget.
    """
    if given_category:
        return None
    terms = query_terms(attributes)
    prefix = CATEGORY_FIELD + "="
    read = next((t for t in terms["required"] if t.startswith(prefix)), None)
    if read is None:
        return None
    runner = max(((p, t) for t, p in alternatives if t.startswith(prefix) and t != read and p >= HEDGE_P),
                 default=None)
    if runner is None:
        return None
    tree = ("masterCategory", "subCategory", CATEGORY_FIELD)
    return {**terms, "filters": (runner[1],), "widen": 0, "scan_budget": 0.0,
            "required": tuple(t for t in terms["required"] if t.split("=", 1)[0] not in tree)}


class Pipeline:
    """Holds the models; `item()` and `query()` run one image each, `*_batch` many."""

    def __init__(self, attributes: AttributeModel, features: FeatureExtractor, codebook: CodeBook,
                 text: TitleClassifier | None = None, detector=None, hist_bins=DEFAULT_BINS, beam: int = 3):
        self.attributes, self.features, self.codebook = attributes, features, codebook
        self.text, self.detector, self.hist_bins, self.beam = text, detector, hist_bins, beam
        self.taxonomy = attributes.taxonomy
        self.bits = codebook.projection.shape[1]
        self.w_colour = 0.3
        self.device = torch.device("cpu")

    def to(self, device) -> "Pipeline":
        """Moves the networks (attributes, features, detector) to `device`; inputs follow them
        there and results come back to the CPU. The title model stays on the CPU."""
        self.device = torch.device(device)
        self.attributes.to(self.device)
        self.features.to(self.device)
        if self.detector is not None:
            self.detector.model.to(self.device)
        return self

    @classmethod
    def load(cls, assets: Path | None = None, device: str | None = None) -> "Pipeline":
        """The shipped models (models/assets, or FASHION_ASSETS), on `device` (default: the GPU
        when torch sees one, as in a Ray replica given a GPU, else the CPU), ready to serve
        (models/inference.py): for reading photos, not for training."""
        assets = Path(assets or ASSETS)
        from .evaluation_cli import load_attributes
        from .text_pipeline import load_text
        feats, book = load_features(assets / "features.pt")
        detector = None
        if (assets / "detector.pt").exists():
            from .detector import load_detector
            detector = load_detector(assets / "detector.pt")
        from .features import colour_weight
        p = cls(load_attributes(assets / "attributes.pt"), feats, book, load_text(assets / "text.pt"), detector)
        p.w_colour = colour_weight(assets / "features.pt")
        from .inference import ready_to_serve
        for net in [p.attributes, p.features] + ([detector.model] if detector is not None else []):
            ready_to_serve(net)     # batch norms folded, channels-last: the same outputs, sooner
        return p.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    # ------------------------------------------------------------ pieces
    def read_titles(self, titles: list[str]) -> list[TitleReading]:
        """Per seller's title: the category it names (None when unsure or unknown here), the gender
        and colour it states, and its belief over every category (models/text_pipeline.py)."""
        return read_titles(self.text, self.taxonomy, titles)

    def _attribute_input(self, images: list[Image.Image]) -> torch.Tensor:
        s = self.attributes.cfg.encoder.image_size
        arr = np.stack([np.asarray(im.resize((s, s), Image.BILINEAR)) for im in images])
        return normalise(torch.from_numpy(arr).to(self.device), self.attributes.cfg.encoder.kind)

    def _features(self, crops: list[Image.Image]) -> np.ndarray:
        s = self.features.cfg.image_size
        arr = np.stack([np.asarray(c.resize((s, s), Image.BILINEAR)) for c in crops])
        return self.features(torch.from_numpy(arr).to(self.device)).cpu().numpy()

    # ------------------------------------------------------------ paths
    def analyse_batch(self, images: list[Image.Image | Photo], categories: list[str | None] | None = None,
                      boxes: list | None = None, sources: list[str] | None = None, detect: bool = True,
                      beam: int | None = None, described: tuple | None = None,
                      runners_up: bool = False, stated: list[dict | None] | None = None,
                      beliefs: list[dict | None] | None = None) -> list[Analysis]:
        """`described` = (codes, hists) already computed for the boxes' crops (skips the features step).
        `stated`: per photo, the gender and colour its title states, forced as the category is.
        `runners_up`: read each field's runners-up down to ALTERNATIVE_P (catalog items: indexed
        under them), not HEDGE_P (a query: its runner-up category is hedged).
        `images`: whole photos, or Photos read by decode_photo (a big one already small)."""
        n = len(images)
        categories = categories or [None] * n
        boxes = boxes or [None] * n
        # the category as the taxonomy spells it ('t-shirts' names 'Tshirts'); unknown: InvalidInput
        categories = [self.taxonomy.check_category(c) if c is not None else None for c in categories]
        # a big photo is read in a smaller copy; boxes go into its pixels, ROIs come back out
        photos = [as_photo(im) for im in images]
        given_boxes = [check_box(b, p.size) if b is not None else None for b, p in zip(boxes, photos)]
        cats = [c.split("=", 1)[-1] if c else None for c in categories]
        t0 = time.perf_counter()
        images, factors = [p.image for p in photos], [p.factor for p in photos]
        crops_box = [scale_box(b, 1 / f, im.size) if b is not None else None
                     for b, f, im in zip(given_boxes, factors, images)]
        # ROI first: the user's box, else the detector (guided by the category when there is
        # one), else the whole photo; the attributes are then read inside the ROI, which on a
        # street photo is far closer to the studio photos the model learnt from.
        rois, roi_src = [], []
        for im, cb, cat in zip(images, crops_box, cats):
            found = cb
            if found is None and self.detector is not None and detect:
                found = self.detector.best_box(im, self.detector_classes(cat))
            rois.append(found or (0, 0, im.width, im.height))
            roi_src.append("user" if cb is not None else "detector" if found else "whole image")
        t1 = time.perf_counter()
        # a whole photo goes on a square, as the catalog's photos are; a box's crop is squashed
        crops = [on_square(im) if src == "whole image" else im.crop(r) for im, r, src in zip(images, rois, roi_src)]
        with torch.no_grad():
            read = self.attributes.generate_with_alternatives(self._attribute_input(crops), beam=beam or self.beam,
                                                              categories=cats, stated=stated, beliefs=beliefs,
                                                              min_p=ALTERNATIVE_P if runners_up else HEDGE_P)
        attrs = [seq for seq, _ in read]
        t2 = time.perf_counter()
        if described is not None:
            codes, hists = described
        else:
            looks = [im.crop(self.detector.appearance_box(r)) if src == "detector" else c
                     for im, r, src, c in zip(images, rois, roi_src, crops)]
            codes = self.codebook.encode(self._features(looks))
            hists = [hsv_histogram(c, self.hist_bins) for c in looks]
        t3 = time.perf_counter()
        out = []
        for i in range(n):
            cat = categories[i].split("=", 1)[-1] if categories[i] else _category_of(attrs[i])
            source = (sources[i] if sources else "user") if categories[i] else "auto"
            if beliefs is not None and beliefs[i] is not None:     # the title's belief and the photo chose it
                read_cat = _category_of(attrs[i])
                source, cat = ("title" if read_cat == cat and categories[i] else "title and photo"), read_cat
            # the user's box as given; any other ROI back in the photo's own pixels
            x0, y0, x1, y1 = given_boxes[i] or scale_box(rois[i], factors[i], photos[i].size)
            out.append(Analysis(
                category=cat, category_source=source,
                attributes=attrs[i], roi=(x0, y0, x1 - x0, y1 - y0), roi_source=roi_src[i], code=codes[i],
                hist=hists[i], timings_ms={"roi": (t1 - t0) * 1e3 / n, "attributes": (t2 - t1) * 1e3 / n,
                                           "features": (t3 - t2) * 1e3 / n},
                alternatives=read[i][1]))
        return out

    def query(self, image: Image.Image | Photo, category: str | None = None, box=None, match=None) -> Analysis:
        """One query photo. With `match` and no box, the ROI is the region that best matches the catalog.

        match(codes, hists) -> one score per region, lower is better (the best hit's score
        from the index); the caller owns the index, so the pipeline stays free of it.
        """
        if box is None and match is not None and self.detector is not None:
            if category is not None:
                category = self.taxonomy.check_category(category)
            image = as_photo(image)        # shrunk once, for the regions and for the reading
            rois, codes, hists = self.regions(image, category)
            scores = np.asarray(match(codes, hists), np.float64)
            if len(scores) != len(rois):
                raise ValueError(f"match returned {len(scores)} scores for {len(rois)} regions")
            best = int(np.argmin(scores))
            x0, y0, x1, y1 = rois[best]
            whole = (x0, y0, x1, y1) == (0, 0, *image.size)
            a = self.analyse_batch([image], [category], [None if whole else (x0, y0, x1 - x0, y1 - y0)],
                                   described=(codes[best: best + 1], hists[best: best + 1]), detect=False)[0]
            a.roi_source = "whole image" if whole else "best match"     # the whole photo read as one is
            return a
        return self.analyse_batch([image], [category], [box])[0]

    def regions(self, image: Image.Image | Photo, category: str | None = None, top: int = REGIONS):
        """Candidate ROIs (the top guided detections, and the whole photo) with their codes and histograms.

        The detector's most confident box is often another garment in a street photo (a
        shoe, a bag, a passer-by's coat); among its top few there is usually one around
        the product, and the catalog tells which: the region whose best match is closest.
        """
        cat = category.split("=", 1)[-1] if category else None
        small, f, size = as_photo(image)
        rois = self.detector.boxes(small, self.detector_classes(cat), top) if self.detector is not None else []
        crops = [small.crop(self.detector.appearance_box(r)) for r in rois]     # what each region looks like
        crops.append(on_square(small))
        rois = [scale_box(r, f, size) for r in rois] + [(0, 0, *size)]
        return rois, self.codebook.encode(self._features(crops)), [hsv_histogram(c, self.hist_bins) for c in crops]

    def item(self, image: Image.Image, title: str) -> Analysis:
        return self.items([image], [title])[0]

    def items(self, images: list[Image.Image], titles: list[str], detect: bool = False) -> list[Analysis]:
        """Catalog items: the title names the category, and states the gender and colour more often
        than not; what it says guides the attributes (the photo reads the rest, and the other
        colours it suggests are indexed as runners-up).

        Studio product photos show one item on a plain background, so by default their
        ROI is the whole photo (the detector, trained on street photos, costs ~0.4 s an
        image on a CPU); detect=True runs the guided detector on them too.
        """
        read = self.read_titles(titles)
        return self.analyse_batch(images, [r.category for r in read], sources=["title"] * len(images), detect=detect,
                                  beam=1, runners_up=True, stated=[r.stated for r in read],
                                  beliefs=[r.belief for r in read])

    def detector_classes(self, category: str | None) -> set[str] | None:
        from .detector import guidance
        return guidance(self.detector.mapping, category) if self.detector is not None else None


def _category_of(seq: list[tuple[str, float]]) -> str | None:
    return next((t.split("=", 1)[1] for t, _ in seq if t.startswith("articleType=")), None)


__all__ = ["Analysis", "Pipeline", "InvalidInput"]
