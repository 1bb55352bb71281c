"""Indexing a catalog with Ray Data: read, decode, run the models on an actor pool, write.

    rows (CSV, or JSON lines: cluster/catalog_lines.py) -> skip ids already indexed
         -> map_batches(ItemAnalyzer, actor pool) -> batches of analysed items
         -> Cluster.upsert (through the coordinator)

A row whose image is missing or broken is written to the errors file and skipped;
the job never aborts on one. Rerunning the job skips what is already indexed. A row
that gives its attributes (a JSON-lines catalog) is indexed under them; the models read
the rest. An uploaded photo a row names (an export of another root) is copied into this
root's uploads/, so the new root holds all its photos.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import ray

from models.data import load_catalog
from shards.codes import id_from_text
from shards.errors import InvalidInput
from shards.files import write_atomically

from .catalog_lines import is_catalog_lines, named_photo, read_catalog_lines
from .photo_fetch import fetch_photos, is_url
from .uploads import UPLOADS, photo_mtime, photo_path, upload_name, uploads_folder


class ItemAnalyzer:
    """One actor of the pool: the item path of models/pipeline.py on a batch of rows."""

    def __init__(self, root: str):
        import torch
        from models.pipeline import Pipeline
        torch.set_num_threads(2)
        self.pipeline = Pipeline.load()
        self.root = Path(root)        # where a photo named by URL is kept (cluster/photo_fetch.py)

    def __call__(self, batch: dict) -> dict:
        from models.data import decode_photo
        from shards.errors import InvalidInput
        paths = [str(x) for x in batch["image"]]
        urls = [i for i, x in enumerate(paths) if is_url(x)]
        fetched = dict(zip(urls, fetch_photos([(paths[i], str(batch["id"][i])) for i in urls], self.root)))
        images, good, errors = [], [], []
        for i, path in enumerate(paths):
            try:
                if i in fetched:
                    path = paths[i] = str(fetched[i].result())   # raises what the fetch raised
                images.append(decode_photo(path))     # a big photo read small
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
                given = str(batch["attributes"][i])          # a JSON list, or "" where the row gives none
                attrs[i] = given or json.dumps(a.index_tokens())
        # image: where the photo lies now (a fetched one in uploads/); row_image: as the row named it;
        # source: the URL it came from (fetched now, or by the root a line was exported from)
        return {"id": batch["id"], "title": batch["title"], "image": paths, "row_image": batch["image"],
                "error": errors, "code": codes, "hist": hists, "attributes": attrs,
                "source": [str(x) if is_url(str(x)) else str(s) for x, s in zip(batch["image"], batch["source"])]}


def read_catalog(catalog: str, images: str | None = None) -> list:
    """The catalog's rows: `catalog` is its CSV (any name) or a folder holding styles.csv, the
    photos in `images` or in images/ beside the CSV; or a JSON-lines file (.jsonl: an export, a
    feed), relative photo paths from `images` or the file's folder. A missing file, column or
    photo folder, or a malformed line, is an InvalidInput here, before anything is started or
    written. Photo paths are whole: an item's record does not depend on this process's folder."""
    if is_catalog_lines(catalog):
        from models.data import ASSETS
        from models.taxonomy import Taxonomy
        return read_catalog_lines(catalog, images, Taxonomy.load(ASSETS / "taxonomy.json"))
    path = Path(os.path.abspath(catalog))
    csv_folder = path if path.is_dir() else path.parent
    images = Path(os.path.abspath(images)) if images else None
    # a photo column's relative paths start at --images, else at the CSV's folder
    products = load_catalog(path, required=CATALOG_ID, images=images,
                            photo=lambda row: row_photo(row, images or csv_folder))
    folder = images or csv_folder / "images"
    if any(not is_url(p.image) and Path(p.image).parent == folder for p in products) and not folder.is_dir():
        raise InvalidInput(f"no images folder at {folder} (--images names another one)")
    return products


PHOTO_COLUMNS = ("image", "image_link", "image_url")   # a shop's CSV may name each photo (Google's feed: image_link)


def row_photo(row: dict, base: Path) -> Path | str | None:
    """The photo a CSV row names in a photo column (`named_photo`), or None where it names none:
    its photo is then images/<id>.jpg."""
    value = next((v.strip() for c in PHOTO_COLUMNS if (v := row.get(c)) and v.strip()), "")
    return named_photo(value, base) if value else None


def recorded_photo(image) -> str:
    """How an item records the photo of its row: an uploaded one by its place in the root's
    uploads/ (copied there on indexing), any other by its path."""
    name = upload_name(str(image))
    return f"{UPLOADS}/{name}" if name else str(image)


def _same_photo(recorded: str, image) -> bool:
    """Does an item's record name this row's photo? A record made relative to an older run's
    working directory is read from this one's."""
    if upload_name(recorded):
        return recorded_photo(image) == recorded
    return os.path.abspath(recorded) == os.path.abspath(image)


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


def _write_batches(cluster, batches, errors, total: int, t0: float, log, was: dict | None = None) -> tuple[int, int]:
    """Upsert each analysed batch (acknowledged = durable); a row that failed goes to `errors`.
    `was`: id -> the photo an indexed item recorded before; one in the root's uploads/ that the
    item no longer records is removed once the item is written (as PATCH /items does)."""
    was = was or {}
    written = failed = 0
    for b in batches:
        error = [str(e) or _copy_upload(str(image), Path(cluster.root)) for e, image in zip(b["error"], b["image"])]
        ok = [i for i, e in enumerate(error) if not e]
        for i, e in enumerate(error):
            if e:
                row = {"id": str(b["id"][i]), "image": str(b["row_image"][i]), "error": e}
                errors.write(json.dumps(row) + "\n")
                failed += 1
        if not ok:
            continue
        codes = np.stack([np.frombuffer(b["code"][i], np.uint64) for i in ok])
        hists = np.stack([np.frombuffer(b["hist"][i], np.float32) for i in ok])
        keys = [id_from_text(str(b["id"][i])) for i in ok]
        metas = [{"title": str(b["title"][i]), "image": recorded_photo(b["image"][i]),
                  **({"source": str(b["source"][i])} if b["source"][i] else {})} for i in ok]
        cluster.upsert(keys, codes, hists, [json.loads(b["attributes"][i]) for i in ok], metas)
        root = Path(cluster.root)
        for key, meta in zip(keys, metas):     # after the write is durable, never before
            # by where the files lie: an older record may name the same photo in other words
            if key in was and photo_path(was[key], root) != photo_path(meta["image"], root):
                remove_upload(was[key], root)
        written += len(ok)
        log(f"indexed {written + failed}/{total} ({written / (time.perf_counter() - t0):.1f} items/s)")
    return written, failed


def remove_upload(recorded: str, root: Path) -> None:
    """Remove a photo kept in `root`'s uploads/ (an upload, or one fetched by URL) that its item
    no longer records; a catalog's own photo file is never touched."""
    if upload_name(recorded):
        photo_path(recorded, root).unlink(missing_ok=True)


def _copy_upload(image: str, root: Path) -> str:
    """An uploaded photo a row names, stored durably in `root`'s uploads/ before its item is
    written (as POST /items stores one); "" when done or not an upload, else why it could not be
    read (that row's error). A full disk here stops the job, as it does a fetch."""
    name = upload_name(image)
    dest = uploads_folder(root) / name if name else None
    if dest is None or dest.exists():      # an upload's name is never reused: a photo there is this one
        return ""
    try:
        data = Path(image).read_bytes()
    except OSError as exc:
        return f"cannot read the uploaded photo {image}: {exc.strerror or exc}"
    write_atomically(dest, data)
    return ""


def index_catalog(cluster, rows: list, errors_path: str = "index-errors.jsonl", batch: int = 32,
                  concurrency: int | None = None, log=print, sync: bool = False,
                  max_delete: float = MAX_DELETE, dry_run: bool = False, uploads_too: bool = False) -> dict:
    """Index a catalog's rows (read_catalog): what is already indexed is skipped, a broken photo or
    a repeated id goes to the errors file.

    `sync`: the rows are the whole catalog. An indexed item whose title or photo path differs
    from its row, or whose photo file was modified after the last whole sync began, is indexed
    again; once the rows are indexed, the items indexed from a catalog that no row names any
    more are deleted (items added through POST /items stay, unless `uploads_too`: the rows are
    a JSON-lines catalog, which names uploaded photos as well, as an export does). A photo kept
    in the root's uploads/ (uploaded, or fetched by URL) goes once no item records it: after its
    item's delete, or the write of its item with another photo. A sync that would delete more than
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
        indexed = {it["id"]: it for it in cluster.items()}
        done, gone = sync_plan(products, ids, indexed, since, uploads_too)
        try:
            check_deletions(len(gone), sum(from_a_catalog(it, uploads_too) for it in indexed.values()), max_delete)
        except InvalidInput as exc:
            if not dry_run:
                raise
            refused = str(exc)
    else:
        done, indexed = set(), {}
        for i in range(0, len(ids), 5000):
            chunk = ids[i: i + 5000]
            done |= {x for x, present in zip(chunk, cluster.existing(chunk)) if present}
    todo, todo_ids = [p for p, i in zip(products, ids) if i not in done], [i for i in ids if i not in done]
    log(f"{len(products)} rows, {len(done)} indexed as they are, {len(todo)} to index"
        + (f", {len(gone)} indexed items no row names (deleted after)" if sync else ""))
    if dry_run:
        return {"dry_run": True, "rows": len(products) + len(aside), "skipped_existing": len(done),
                "would_index": len(todo), "repeated_ids": repeated, "invalid_ids": len(aside) - repeated,
                **({"would_delete": len(gone), "delete_examples": gone[:20], "refused": refused} if sync else {})}
    written, failed = 0, 0
    if todo:
        ds = ray.data.from_items([{"id": p.id, "title": p.title, "image": str(p.image), "source": p.source or "",
                                   "attributes": json.dumps(list(p.attributes)) if p.attributes else ""} for p in todo],
                                 override_num_blocks=max(1, len(todo) // batch))
        concurrency = concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)))   # one per CPU
        ds = ds.map_batches(ItemAnalyzer, batch_size=batch, compute=ray.data.ActorPoolStrategy(size=concurrency),
                            num_cpus=1, fn_constructor_kwargs={"root": str(cluster.root)})
        with open(errors_path, "a") as errors:
            try:
                written, failed = _write_batches(cluster, ds.iter_batches(batch_size=batch, batch_format="numpy"),
                                                 errors, len(todo), t0, log,
                                                 was={i: indexed[i]["meta"].get("image", "") for i in todo_ids
                                                      if i in indexed})
            except KeyboardInterrupt:
                log("interrupted: what was indexed is kept; the same command again indexes the rest")
                raise
    deleted = 0
    for i in range(0, len(gone), 5000):     # after the rows are in: a stopped sync has deleted nothing early
        chunk = gone[i: i + 5000]
        deleted += cluster.delete(chunk)
        for key in chunk:                   # their photos kept in uploads/ go after them, as DELETE's do
            remove_upload(indexed[key]["meta"].get("image", ""), Path(cluster.root))
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


def sync_plan(products: list, ids: list, indexed: dict, since: float | None = None,
              uploads_too: bool = False) -> tuple[set, list]:
    """(ids indexed as their rows are, so skipped; indexed ids that no row names and that came from a
    catalog, so to delete). `indexed`: id -> the item as listed ({"attributes", "meta"}). A row whose
    title, photo path or given attributes differ from the item's, or whose photo was modified after
    `since` (the last whole sync's start), is neither. `uploads_too`: the rows speak for items whose
    photo was uploaded as well (an export names them), so those too are deleted when no row names them."""
    def as_indexed(p, item) -> bool:
        meta = item["meta"]
        if is_url(p.image):     # fetched once and kept: the same URL is the same photo
            photo = meta.get("source") == p.image
        else:
            photo = _same_photo(meta.get("image", ""), p.image) and (since is None or photo_mtime(p.image) <= since)
        return (photo and meta.get("title") == p.title
                and (p.attributes is None or set(p.attributes) == set(item["attributes"])))
    same = {i for p, i in zip(products, ids) if i in indexed and as_indexed(p, indexed[i])}
    named = set(ids)
    gone = [i for i, item in indexed.items() if i not in named and from_a_catalog(item, uploads_too)]
    return same, gone


def from_a_catalog(item: dict, uploads_too: bool = False) -> bool:
    """Does a catalog speak for this indexed item, so that a sync deletes it when no row names it?
    One indexed from a row does (its photo fetched by URL too: `source`); one added through POST
    /items, its photo uploaded into the root, only when `uploads_too` (an export names those)."""
    meta = item["meta"]
    return uploads_too or not upload_name(meta.get("image", "")) or bool(meta.get("source"))
