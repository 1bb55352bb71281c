"""`fashion-search similar-items`: every catalog item's most similar items, one JSON line each.

What a shop computes ahead for its product pages ("more like this", models/similar.py,
as GET /items/{id}/similar answers one item). The catalog is read bucket group by
bucket group, each bucket from the shard the placement map names as its owner, and each
group's items are searched as one batch. A group some of whose buckets changed owner
while it was read (a rebalance moved them) is read again, so each item gets exactly one
line.
The lines go to OUT.partial, which is renamed OUT once whole: a file named OUT is always
complete. After each group the lines are fsync'd and OUT.progress records how far the
job got, so a stopped job goes on from there with `--resume` (items added meanwhile to
buckets it had done are not in the file; run it anew for those).

A line: {"id": ..., "similar": [{"id": ..., "score": ...}, ...], "relaxed": [...],
"partial": false}. `partial` true means a shard did not answer that search (its items
may be missing from the list); the report counts such lines and the command then exits 1.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Awaitable, Callable

from coordinator.router import fan_out
from shards.errors import ShardUnavailable

from .new_file import check_new_file, durable, progress_file, record_progress, resume_point, whole_file

GROUP = 64            # buckets read and searched together (4096 buckets: 1/64 of the catalog)
REREADS = 10          # times a group is read again while rebalancing moves it, before giving up


async def similar_items(router, placement: Callable[[], Awaitable[dict]], out_path, k: int, w_colour: float,
                        group: int = GROUP, timeout_s: float = 120.0, log=print, resume: bool = False) -> dict:
    """Write every item's `k` most similar items to `out_path` (see the module's notes).

    `router`: a coordinator.router.Router whose clients reach the shards; `placement`: the
    current placement map as `Placement.to_json()` gives it. `resume`: go on from the last
    group a stopped run made durable (OUT.progress says which), if there is one.
    """
    from models.similar import similar_query, without_item
    out = check_new_file(out_path)
    n_buckets = (await placement())["n_buckets"]
    settings = {"k": k, "w_colour": w_colour, "n_buckets": n_buckets, "group": group}
    done = resume_point(out, settings) if resume else None
    if done is None:
        progress_file(out).unlink(missing_ok=True)    # it would describe a file this run starts anew
    t0 = time.perf_counter()
    first = done["next_bucket"] if done else 0
    items, partial_lines = (done["items"], done["partial_lines"]) if done else (0, 0)
    rereads = 0
    with whole_file(out, keep=done["bytes"] if done else None) as f:
        for start in range(first, n_buckets, group):
            buckets = list(range(start, min(start + group, n_buckets)))
            batch, extra = await _read_group(router, placement, buckets, n_buckets, timeout_s)
            rereads += extra
            queries = [similar_query({"code": c, "hist": h, "attributes": a}, k, w_colour)
                       for c, h, a in zip(batch["codes"], batch["hists"], batch["attributes"])]
            for item_id, r in zip(batch["ids"], await router.search_batch(queries) if queries else []):
                hits = without_item(r.hits, item_id, k)
                f.write(json.dumps({"id": item_id, "similar": [{"id": h.id, "score": h.score} for h in hits],
                                    "relaxed": list(r.relaxed), "partial": r.partial}) + "\n")
                partial_lines += r.partial
            items += len(batch["ids"])
            record_progress(out, {**settings, "next_bucket": buckets[-1] + 1, "bytes": durable(f), "items": items,
                                  "partial_lines": partial_lines})
            log(f"  {items} items, buckets {buckets[-1] + 1}/{n_buckets} ({time.perf_counter() - t0:.0f} s)")
    progress_file(out).unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    return {"out": str(out), "items": items, "k": k, "partial_lines": partial_lines, "rereads": rereads,
            "resumed_at_bucket": first if done else None, "seconds": round(seconds, 2),
            "items_per_s": round((items - (done["items"] if done else 0)) / seconds, 1) if seconds else None,
            "ok": partial_lines == 0}


async def _read_group(router, placement, buckets: list[int], n_buckets: int, timeout_s: float):
    """The items of `buckets`, each bucket read from the shard that owned it before and after the read.

    The owner holds every item of its bucket while the bucket moves (writes reach both
    shards), and deletes its copy only after a new map version names the new owner: an
    owner that did not change across the read means nothing was deleted under it.
    """
    for attempt in range(REREADS):
        before = await placement()
        if router.refresh is not None and set(before["shards"]) - set(router.clients):
            await router.refresh()      # a shard added since: its client
        by_owner = defaultdict(list)
        for b in buckets:
            by_owner[before["owner"][b]].append(b)
        answers, failed = await fan_out({s: router.clients[s].export_buckets(bs, n_buckets)
                                         for s, bs in by_owner.items()}, timeout_s)
        if failed:
            name, exc = next(iter(failed.items()))
            raise ShardUnavailable(name, f"{exc.reason}; its items cannot be read, so the job stopped (run it again)")
        after = await placement()
        if all(after["owner"][b] == before["owner"][b] for b in buckets):
            batch = {"ids": [], "codes": [], "hists": [], "attributes": []}
            for a in answers.values():
                batch["ids"] += a["ids"]
                batch["codes"] += list(a["codes"])
                batch["hists"] += list(a["hists"])
                batch["attributes"] += a["attributes"]
            return batch, attempt
    raise ShardUnavailable("placement", f"buckets {buckets[0]}..{buckets[-1]} changed owner {REREADS} times while "
                           "they were read (a rebalance?); run the job again after it")
