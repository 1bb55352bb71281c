"""Batch query jobs: a file of queries in, a JSONL file of results out.

QUERIES is a CSV (columns image[, category][, box][, filters]) or JSONL ({"image": path or
http(s) URL (fetched by the actor that reads it, not kept),
"category": ..., "box": "x,y,w,h" or [x, y, w, h], "filters": "gender=Women,usage=Sports"
or a list of tokens}). Attached to a Ray cluster (--address), the
job is submitted through Ray's job submission API and runs there; otherwise it
runs from this process against a local cluster on the storage root. Either way a pool
of actors reads the photos (Ray Data), and the job's process searches and writes.
"""
from __future__ import annotations

import csv
import json
import math
import pickle
import shlex
import time
from pathlib import Path

from shards.errors import InvalidInput
from shards.query import Query

from .photo_fetch import download_all, is_url
from .rest import parse_box


def read_queries(path: str) -> list[dict]:
    """The queries of a CSV or JSONL file, the whole file checked before any query is searched.

    A line that is not a query (not JSON, not an object, no image, more CSV fields than
    the header: an unquoted "x,y,w,h" box) is an error naming the line. Columns besides
    image, category and box are kept and echoed back with each answer (an id of the
    caller's, say); one named like an option ("catgory", "bbox") is refused. A query's
    missing photo, unknown category or bad box is its own error line in the output.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")   # a spreadsheet's BOM is not part of the first column's name
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    if p.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((n, json.loads(line)))
            except ValueError as exc:
                raise InvalidInput(f"{path}, line {n}: not JSON ({exc})") from None
    else:
        reader = csv.DictReader(text.splitlines())
        rows = [(reader.line_num, r) for r in reader]
    if not rows:
        raise InvalidInput(f"{path} has no queries")
    _no_near_misses(path, [r for _, r in rows if isinstance(r, dict)])
    out = []
    for n, r in rows:
        where = f"{path}, line {n}"
        if not isinstance(r, dict):
            raise InvalidInput(f"{where}: a query is an object with an 'image' path, got {r!r}")
        if None in r:
            raise InvalidInput(f"{where}: more fields than the header has; quote a box: \"x,y,w,h\"")
        if not isinstance(r.get("image"), str) or not r["image"]:
            raise InvalidInput(f"{where}: every query needs an 'image' path, got {r!r}")
        if r.get("category") is not None and not isinstance(r["category"], str):
            raise InvalidInput(f"{where}: category is a name, got {r['category']!r}")
        filters = r.get("filters")
        if filters is not None and not isinstance(filters, str) and not (
                isinstance(filters, list) and all(isinstance(t, str) for t in filters)):
            raise InvalidInput(f"{where}: filters are 'field=value' tokens, comma-separated or a list, got {filters!r}")
        if "://" in r["image"] and not is_url(r["image"]):
            raise InvalidInput(f"{where}: a photo's URL is http:// or https://, got {r['image']!r}")
        if not is_url(r["image"]):      # a path: from the queries file's folder; a URL is fetched as it is
            r["image"] = str((p.parent / r["image"]) if not Path(r["image"]).is_absolute() else r["image"])
        out.append(r)
    return out


QUERY_FIELDS = ("image", "category", "box", "filters")


def _no_near_misses(path: str, rows: list[dict]) -> None:
    """A column the caller meant as an option but misspelt ("catgory") would be echoed back as the
    caller's own and the queries run without it: refused before anything runs."""
    import difflib
    names = {k for r in rows for k in r if isinstance(k, str)} - set(QUERY_FIELDS)
    for name in sorted(names):
        near = difflib.get_close_matches(name.strip().lower(), QUERY_FIELDS, n=1, cutoff=0.8)
        if near:
            raise InvalidInput(f"{path}: column {name!r} is not a query option; did you mean {near[0]!r}? "
                               f"(options: {', '.join(QUERY_FIELDS)}; other columns are echoed back as they are)")


def resume_point(out_path: str, rows: list[dict]) -> tuple[int, int]:
    """(rows an earlier run answered in `out_path`, the byte offset where their lines end).

    Whole lines only: a line cut short by a crash does not count, and the run that
    resumes writes from the offset over it. Line i must answer row i, so the results of
    another queries file are an error, never a silent mix. Reads; changes nothing.
    """
    try:
        data = Path(out_path).read_bytes()
    except FileNotFoundError:
        return 0, 0
    except OSError as exc:
        raise InvalidInput(f"cannot read {out_path}: {exc.strerror or exc}") from exc
    end = data.rfind(b"\n") + 1
    lines = data[:end].splitlines()
    for n, raw in enumerate(lines, 1):
        try:
            line = json.loads(raw)
        except ValueError:
            raise InvalidInput(f"{out_path}, line {n}: not an answer line; --resume continues a file that "
                               "`fashion-search batch` wrote") from None
        if n > len(rows) or not isinstance(line, dict) or line.get("query") != rows[n - 1]:
            raise InvalidInput(f"{out_path}, line {n} does not answer row {n} of the queries file; --resume "
                               "continues the results of the same queries")
    return len(lines), end


class QueryAnalyzer:
    """One actor of the pool: the query path of models/pipeline.py on a batch of query rows.

    Returns each row's reading (an Analysis) or why it could not be read (a string),
    pickled: the rows go back to the driver, which searches and writes them in order.
    """

    def __init__(self):
        import torch
        from models.pipeline import Pipeline
        torch.set_num_threads(2)
        self.pipeline = Pipeline.load()

    def __call__(self, batch: dict) -> dict:
        from models.data import decode_photo
        rows = [json.loads(r) for r in batch["row"]]
        read: list = [None] * len(rows)
        urls = [j for j, r in enumerate(rows) if is_url(r["image"])]
        fetched = dict(zip(urls, download_all([rows[j]["image"] for j in urls])))   # read, not kept
        good, images = [], []
        for j, r in enumerate(rows):
            try:
                photo = fetched[j].result() if j in fetched else r["image"]     # raises a failed fetch's error
                images.append(decode_photo(photo))     # a big photo read small
                good.append(j)
            except InvalidInput as exc:
                read[j] = str(exc)
        for j, a in zip(good, self._analyse([rows[j] for j in good], images)):
            read[j] = str(a) if isinstance(a, Exception) else a
        return {"row": batch["row"], "read": [pickle.dumps(a) for a in read]}

    def _analyse(self, rows: list[dict], images: list) -> list:
        if not rows:
            return []
        try:
            return self.pipeline.analyse_batch(images, [r.get("category") or None for r in rows],
                                               [parse_box(r.get("box")) for r in rows])
        except InvalidInput:  # one bad category or box: one at a time, so the others are read
            out = []
            for r, im in zip(rows, images):
                try:
                    out.append(self.pipeline.query(im, r.get("category") or None, parse_box(r.get("box"))))
                except InvalidInput as e:
                    out.append(e)
            return out


def run_batch(cluster, rows: list[dict], out_path: str, k: int = 20, batch: int = 16, log=print,
              resume: bool = False, concurrency: int | None = None) -> dict:
    """Search every query of `rows` (read_queries) and write one JSON line each, in order.

    The photos are read by a pool of `concurrency` actors (Ray Data, as indexing does;
    default one per CPU of the cluster), so a job grows with the cluster; this process
    searches each chunk as it comes back and writes it. With `resume`, the rows already
    answered in `out_path` (resume_point) are skipped and the rest written after them;
    else `out_path` is written anew. Lines reach the file chunk by chunk, so an
    interrupted job keeps what it answered.
    """
    import ray

    from models.data import ASSETS
    from models.features import colour_weight
    from models.taxonomy import Taxonomy
    start, offset = resume_point(out_path, rows) if resume else (0, 0)
    w_colour = colour_weight(ASSETS / "features.pt")
    vocabulary = Taxonomy.load(ASSETS / "taxonomy.json")     # filters read as the index spells them
    t0 = time.perf_counter()
    done = errors = 0
    if start:
        log(f"{start} of {len(rows)} queries already answered in {out_path}; going on from there")
    with open(out_path, "r+" if offset else "w") as out:
        out.seek(offset)
        out.truncate()      # a line cut short by a crash goes
        todo = rows[start:]
        if not todo:
            return {"queries": len(rows), "already_answered": start, "answered": 0, "errors": 0,
                    "out": out_path, "seconds": time.perf_counter() - t0}
        concurrency = concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)))
        options = ray.data.DataContext.get_current().execution_options
        kept, options.preserve_order = options.preserve_order, True   # line i answers row i
        ds = ray.data.from_items([{"row": json.dumps(r)} for r in todo],
                                 override_num_blocks=max(1, math.ceil(len(todo) / batch)))
        ds = ds.map_batches(QueryAnalyzer, batch_size=batch, num_cpus=1,
                            compute=ray.data.ActorPoolStrategy(size=concurrency))
        try:
            for b in ds.iter_batches(batch_size=batch, batch_format="numpy"):
                part = [json.loads(r) for r in b["row"]]
                lines = _search(cluster, part, [pickle.loads(x) for x in b["read"]], k, w_colour, vocabulary)
                out.write("".join(json.dumps(line) + "\n" for line in lines))
                out.flush()
                errors += sum("error" in line for line in lines)
                done += sum("error" not in line for line in lines)
                log(f"{start + done + errors}/{len(rows)} queries ({done / (time.perf_counter() - t0):.1f}/s)")
        except KeyboardInterrupt:
            log(f"interrupted: the {start + done + errors} answers written are kept in {out_path}; the same "
                "command with --resume goes on from there")
            raise
        finally:
            options.preserve_order = kept
    return {"queries": len(rows), "already_answered": start, "answered": done, "errors": errors,
            "out": out_path, "seconds": time.perf_counter() - t0}


def row_filters(row: dict, vocabulary) -> tuple[str, ...]:
    """A row's hard filters, as the index spells them (`Taxonomy.resolve_tokens`, as the REST front
    reads them); a malformed token is InvalidInput."""
    raw = row.get("filters") or ()
    return vocabulary.resolve_tokens(t.strip() for t in (raw.split(",") if isinstance(raw, str) else raw)
                                     if t.strip())


def _search(cluster, rows: list[dict], reads: list, k: int, w_colour: float, vocabulary) -> list[dict]:
    """One answer line per row: its reading and hits, or why it could not be searched."""
    from models.hedge import answers, hedge_query, hedged_category, with_hedges
    reads = list(reads)
    filters: list[tuple[str, ...]] = []
    for i, (r, a) in enumerate(zip(rows, reads)):
        try:
            filters.append(row_filters(r, vocabulary))
        except InvalidInput as exc:
            reads[i] = str(exc)             # this row's own error line; the others are searched
            filters.append(())
    read = [(a, f) for a, f in zip(reads, filters) if not isinstance(a, str)]
    queries = [Query(code=a.code, hist=a.hist, k=k, w_colour=w_colour, filters=f, **a.query_terms()) for a, f in read]
    read = [a for a, _ in read]
    hedges = [hedge_query(q, a.hedge_terms()) for q, a in zip(queries, read)]   # models/hedge.py
    results = iter(zip(answers(cluster.search_batch(with_hedges(queries, hedges)), hedges), hedges, queries))
    lines = []
    for r, a in zip(rows, reads):
        if isinstance(a, str):
            lines.append({"query": r, "error": a})
            continue
        (res, hits, hedge_res), hedge, query = next(results)
        unmet = query.filters and not hits and not res.partial
        warnings = [vocabulary.unmet_filters(query.filters)] if unmet else []
        lines.append({"query": r, "category": a.category, "roi": a.roi, "filters": list(query.filters),
                      "warnings": warnings,
                      "attributes": [{"token": t, "probability": p} for t, p in a.attributes],
                      "relaxed": list(res.relaxed), "widened": list(res.widened), "hedged": hedged_category(hedge),
                      "partial": res.partial or (hedge_res is not None and hedge_res.partial),
                      "results": [h.to_dict() for h in hits]})
    return lines


def submit_job(address: str, argv: list[str]) -> dict:
    """Run this same batch command on the cluster through Ray's job submission API."""
    from ray.job_submission import JobSubmissionClient
    client = JobSubmissionClient(address)
    job = client.submit_job(entrypoint=shlex.join(["fashion-search", *argv, "--in-process"]))  # paths may hold spaces
    return {"submitted": job, "address": address, "follow": f"ray job logs --address {address} -f {job}"}
