"""A contact sheet: street photos as queries, their ROI and hashtags, and the top 8 catalog hits.

    python -m benchmarks.contact_sheet --out models/results/contact_sheet.png

Gallery: the test split of the product catalog (956 items) indexed by the item path
(title -> category -> guided attributes -> whole-photo ROI -> code + histogram) in
an in-process shard; queries: street photos from ccp-tags through the query path
(option 1: the detector finds the ROI).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from models.data import data_root, load_catalog, load_splits
from models.hedge import answers, hedge_query, hedged_category, with_hedges
from models.pipeline import Pipeline
from shards.query import Query
from shards.shard import Shard, ShardConfig

THUMB = 128


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="models/results/contact_sheet.png")
    ap.add_argument("--queries", type=int, default=6)
    args = ap.parse_args(argv)
    pipe = Pipeline.load()
    test = load_splits()["test"]
    products = [p for p in load_catalog() if p.id in test]
    shard = Shard(None, ShardConfig(bits=pipe.bits, hist_bins=64))
    for i in range(0, len(products), 64):
        part = products[i: i + 64]
        imgs = [Image.open(p.image).convert("RGB") for p in part]
        an = pipe.items(imgs, [p.title for p in part])
        shard.upsert([int(p.id) for p in part], np.stack([a.code for a in an]), np.stack([a.hist for a in an]),
                     [a.index_tokens() for a in an], [{"title": p.title} for p in part])
    by_id = {int(p.id): p for p in products}
    rows = list(csv.DictReader(open(data_root() / "ccp-tags" / "tags.csv")))
    rng = np.random.default_rng(1)
    picks = [rows[i] for i in rng.choice(len(rows), args.queries, replace=False)]
    sheet = Image.new("RGB", (THUMB * 9 + 20, (THUMB + 40) * len(picks)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(picks):
        img = Image.open(data_root() / "ccp-tags" / row["file_name"]).convert("RGB")
        a = pipe.query(img)
        query = Query(code=a.code, hist=a.hist, k=8, w_colour=pipe.w_colour, **a.query_terms())
        hedge = hedge_query(query, a.hedge_terms())    # the runner-up category too, as the REST front does
        (res, hits, _), = answers(shard.search_batch(with_hedges([query], [hedge])), [hedge])
        q = img.copy()
        x, y, w, h = a.roi
        ImageDraw.Draw(q).rectangle([x, y, x + w, y + h], outline=(0, 200, 0), width=4)
        q.thumbnail((THUMB, THUMB))
        top = r * (THUMB + 40)
        sheet.paste(q, (0, top))
        tags = " ".join("#" + t.split("=", 1)[1] for t, p in a.attributes if p >= 0.5)
        also = f"; also {hedged_category(hedge).split('=', 1)[1]}" if hedge is not None else ""
        relaxed = ", ".join(res.relaxed) or "-"
        draw.text((4, top + THUMB + 4), f"{tags}  (ROI: {a.roi_source}; relaxed: {relaxed}{also})", fill=(200, 0, 60))
        for c, hit in enumerate(hits):
            t = Image.open(by_id[hit.id].image).convert("RGB")
            t.thumbnail((THUMB, THUMB))
            sheet.paste(t, (20 + THUMB * (c + 1), top))
            draw.text((20 + THUMB * (c + 1), top + THUMB + 18), f"{hit.score:.2f}", fill=(0, 0, 0))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
