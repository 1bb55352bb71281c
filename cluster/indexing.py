"""Indexing a catalog with Ray Data: read, decode, run the models on an actor pool, write.

    rows (CSV) -> skip ids already indexed -> map_batches(ItemAnalyzer, actor pool)
               -> batches of analysed items -> Cluster.upsert (through the coordinator)

A row whose image is missing or broken is written to the errors file and skipped;
the job never aborts on one. Rerunning the job skips what is already indexed.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import ray

from models.data import load_catalog
from shards.codes import id_from_text
from shards.errors import InvalidInput
from shards.files import write_atomically

from .uploads import photo_mtime, upload_name


class ItemAnalyzer:
    """One actor of the pool: the item path of models/pipeline.py on a batch of rows."""

    def __init__(self):
        import torch
        from models.pipeline import Pipeline
        torch.set_num_threads(2)
        self.pipeline = Pipeline.load()

    def __call__(self, batch: dict) -> dict:
        from models.data import decode_photo
        from shards.errors import InvalidInput
        images, good, errors = [], [], []
        for i, path in enumerate(batch["image"]):
            try:
                images.append(decode_photo(str(path)))     # a big photo read small
                good.append(i)
                errors.append("")
            except InvalidInput as exc:
                errors.append(str(exc))
        n = len(batch["id"])
        codes = [b""] * n
        hists = [b""] * n
        attrs = [""] * n
        if images:
            titles = [str(batch["title"][i]) for i in good]   # a blank one states nothing (read_titles)
            for i, a in zip(good, self.pipeline.items(images, titles)):
                codes[i] = a.code.tobytes()
                hists[i] = a.hist.astype(np.float32).tobytes()
                attrs[i] = json.dumps(a.index_tokens())
        return {"id": batch["id"], "title": batch["title"], "image": batch["image"], "error": errors,
                "code": codes, "hist": hists, "attributes": attrs}


def read_catalog(catalog: str, images: str | None = None) -> list:
    """The catalog's rows: `catalog` is its CSV (any name) or a folder holding styles.csv; the
    photos are in `images` or in images/ beside the CSV. A missing CSV, column or photo
    folder is an InvalidInput here, before anything is started or written."""
    products = load_catalog(Path(catalog), required=CATALOG_ID, images=images)
    folder = products[0].image.parent
    if not folder.is_dir():
        raise InvalidInput(f"no images folder at {folder} (--images names another one)")
    return products


CATALOG_ID = ("id",)   # all a shop's CSV must have: a title guides the reading, labels are not read
REPEATED = "the id repeats an earlier row; the first row is indexed"
MAX_DELETE = 0.1    # the share of a catalog's items one `index --sync` may delete unless told more
LAST_SYNC = "last-sync.json"   # in the storage root: when the last `index --sync` that indexed every row began


def first_of_each_id(products: list) -> tuple[list, list]:
    """(the first row of each valid id, [(row, why it is set aside)]): one item per id; a row that
    repeats an earlier id, or whose id cannot be an item's, is reported rather than indexed."""
    seen: dict = {}
    aside = []
    for p in products:
        try:
            key = id_from_text(p.id)
        except InvalidInput as exc:
            aside.append((p, f"not an item id: {exc}"))
            continue
        if key in seen:
            aside.append((p, REPEATED))
        else:
            seen[key] = p
    return list(seen.values()), aside


def _write_batches(cluster, batches, errors, total: int, t0: float, log) -> tuple[int, int]:
    """Upsert each analysed batch (acknowledged = durable); a row that failed goes to `errors`."""
    written = failed = 0
    for b in batches:
        ok = [i for i, e in enumerate(b["error"]) if not e]
        for i, e in enumerate(b["error"]):
            if e:
                row = {"id": str(b["id"][i]), "image": str(b["image"][i]), "error": e}
                errors.write(json.dumps(row) + "\n")
                failed += 1
        if not ok:
            continue
        codes = np.stack([np.frombuffer(b["code"][i], np.uint64) for i in ok])
        hists = np.stack([np.frombuffer(b["hist"][i], np.float32) for i in ok])
        cluster.upsert([id_from_text(str(b["id"][i])) for i in ok], codes, hists,
                       [json.loads(b["attributes"][i]) for i in ok],
                       [{"title": str(b["title"][i]), "image": str(b["image"][i])} for i in ok])
        written += len(ok)
        log(f"indexed {written + failed}/{total} ({written / (time.perf_counter() - t0):.1f} items/s)")
    return written, failed


def index_catalog(cluster, rows: list, errors_path: str = "index-errors.jsonl", batch: int = 32,
                  concurrency: int | None = None, log=print, sync: bool = False,
                  max_delete: float = MAX_DELETE, dry_run: bool = False) -> dict:
    """Index a catalog's rows (read_catalog): what is already indexed is skipped, a broken photo or
    a repeated id goes to the errors file.

    `sync`: the rows are the whole catalog. An indexed item whose title or photo path differs
    from its row, or whose photo file was modified after the last whole sync began, is indexed
    again; once the rows are indexed, the items indexed from a catalog that no row names any
    more are deleted (items added through POST /items stay). A sync that would delete more than
    `max_delete` of the catalog's items (a fraction; a cut-short CSV, say) is refused first.
    `dry_run`: say what would be indexed and deleted, and write nothing (nor the errors file).
    """
    t0, started = time.perf_counter(), time.time()
    products, aside = first_of_each_id(rows)
    repeated = sum(why == REPEATED for _, why in aside)
    if aside and not dry_run:
        with open(errors_path, "a") as errors:
            for p, why in aside:
                errors.write(json.dumps({"id": p.id, "image": str(p.image), "error": why}) + "\n")
        log(f"{len(aside)} rows repeat an earlier id or have no valid id; written to {errors_path}")
    ids = [id_from_text(p.id) for p in products]
    gone: list = []
    refused = None
    if sync:
        last = Path(cluster.root) / LAST_SYNC
        since = json.loads(last.read_text())["started"] if last.is_file() else None
        indexed = {it["id"]: it["meta"] for it in cluster.items()}
        done, gone = sync_plan(products, ids, indexed, since)
        try:
            check_deletions(len(gone), sum(1 for meta in indexed.values() if not upload_name(meta.get("image", ""))),
                            max_delete)
        except InvalidInput as exc:
            if not dry_run:
                raise
            refused = str(exc)
    else:
        done = set()
        for i in range(0, len(ids), 5000):
            chunk = ids[i: i + 5000]
            done |= {x for x, present in zip(chunk, cluster.existing(chunk)) if present}
    todo = [p for p, i in zip(products, ids) if i not in done]
    log(f"{len(products)} rows, {len(done)} indexed as they are, {len(todo)} to index"
        + (f", {len(gone)} indexed items no row names (deleted after)" if sync else ""))
    if dry_run:
        return {"dry_run": True, "rows": len(products) + len(aside), "skipped_existing": len(done),
                "would_index": len(todo), "repeated_ids": repeated, "invalid_ids": len(aside) - repeated,
                **({"would_delete": len(gone), "delete_examples": gone[:20], "refused": refused} if sync else {})}
    written, failed = 0, 0
    if todo:
        ds = ray.data.from_items([{"id": p.id, "title": p.title, "image": str(p.image)} for p in todo],
                                 override_num_blocks=max(1, len(todo) // batch))
        concurrency = concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)))   # one per CPU
        ds = ds.map_batches(ItemAnalyzer, batch_size=batch, compute=ray.data.ActorPoolStrategy(size=concurrency),
                            num_cpus=1)
        with open(errors_path, "a") as errors:
            try:
                written, failed = _write_batches(cluster, ds.iter_batches(batch_size=batch, batch_format="numpy"),
                                                 errors, len(todo), t0, log)
            except KeyboardInterrupt:
                log("interrupted: what was indexed is kept; the same command again indexes the rest")
                raise
    deleted = 0
    for i in range(0, len(gone), 5000):     # after the rows are in: a stopped sync has deleted nothing early
        deleted += cluster.delete(gone[i: i + 5000])
    if sync and not failed:   # a row that failed is tried again next time, even if its photo is older
        write_atomically(Path(cluster.root) / LAST_SYNC, json.dumps({"started": started, "rows": len(rows)}))
    seconds = time.perf_counter() - t0
    return {"rows": len(products) + len(aside), "skipped_existing": len(done), "indexed": written,
            "repeated_ids": repeated, "invalid_ids": len(aside) - repeated, "errors": failed + len(aside),
            **({"deleted": deleted} if sync else {}),
            "errors_file": errors_path, "seconds": seconds, "items_per_s": written / seconds if seconds else 0.0}


def check_deletions(gone: int, catalog_items: int, max_delete: float) -> None:
    """Refuse a sync that would delete more than `max_delete` of the catalog's items (10 always may go)."""
    if gone > max(10, max_delete * catalog_items):
        raise InvalidInput(f"the CSV no longer names {gone} of the {catalog_items} items indexed from a catalog, and "
                           f"a sync would delete them: more than --max-delete {max_delete:g} allows. Nothing was "
                           "changed. Is the CSV whole? If so, raise --max-delete")


def sync_plan(products: list, ids: list, indexed: dict, since: float | None = None) -> tuple[set, list]:
    """(ids indexed as their rows are, so skipped; indexed ids that no row names and that came from a
    catalog, so to delete). A row whose title or photo path differs from what is indexed, or whose
    photo was modified after `since` (the last whole sync's start), is neither."""
    same = {i for p, i in zip(products, ids)
            if i in indexed and indexed[i].get("title") == p.title and indexed[i].get("image") == str(p.image)
            and (since is None or photo_mtime(p.image) <= since)}
    named = set(ids)
    gone = [i for i, meta in indexed.items() if i not in named and not upload_name(meta.get("image", ""))]
    return same, gone
