"""How searches go, counted for Prometheus by the REST daemon (deploy/README.md, "Monitoring").

Ray Serve already counts requests, errors and latency per route (`ray_serve_*`). These
say what a search engine's operator watches beyond that: answers that missed a shard,
queries whose own attributes had to relax or whose category was hedged, answers with no
hit, how many items a query scanned (the inverted index keeps it small), where a query's
time went, and the items written. Ray's metrics agent on each node exports them, named
`ray_fashion_search_*`, at the node's metrics export port.

`observations` is the pure part (tested on its own); `SearchMetrics` records them.
"""
from __future__ import annotations

import logging

log = logging.getLogger("ray.serve")
STAGE_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000]
SCANNED = [10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000]


def option(result: dict) -> str:
    """The paper's query options: 1 the model reads the category, 2 the user names it, 3 the user's box."""
    if result["roi_source"] == "user":
        return "3"
    return "2" if result["category_source"] == "user" else "1"


def observations(result: dict) -> list[tuple[str, float, dict]]:
    """(metric, value, tags) for one search answer as POST /search returns it."""
    tags = {"option": option(result)}
    out = [("queries", 1, {**tags, "partial": str(result["partial"]).lower()}),
           ("scanned", result["candidates"], tags)]
    if result["relaxed"]:
        out.append(("relaxed", 1, tags))
    if result["hedged"]:
        out.append(("hedged", 1, tags))
    if not result["results"]:
        out.append(("no_hits", 1, tags))
    out += [("stage_ms", ms, {"stage": stage}) for stage, ms in result["timings_ms"].items()]
    return out


class SearchMetrics:
    """The Ray metrics behind `observations`, made in the process that records them (a Serve replica)."""

    def __init__(self):
        from ray.util.metrics import Counter, Histogram
        self.metrics = {
            "queries": Counter("fashion_search_queries", description="Searches answered, by query option and "
                               "whether a shard was missing", tag_keys=("option", "partial")),
            "relaxed": Counter("fashion_search_relaxed", description="Searches whose own attributes relaxed "
                               "(too few items carried them all)", tag_keys=("option",)),
            "hedged": Counter("fashion_search_hedged", description="Searches that also searched the runner-up "
                              "category", tag_keys=("option",)),
            "no_hits": Counter("fashion_search_no_hits", description="Searches answered with no hit",
                               tag_keys=("option",)),
            "scanned": Histogram("fashion_search_scanned_items", description="Items whose codes a search scanned",
                                 boundaries=SCANNED, tag_keys=("option",)),
            "stage_ms": Histogram("fashion_search_stage_ms", description="Milliseconds per stage of a search "
                                  "(roi, attributes, features, analysis, search, total)", boundaries=STAGE_MS,
                                  tag_keys=("stage",)),
            "written": Counter("fashion_search_items_written", description="Items added, corrected or deleted "
                               "through the REST API", tag_keys=("op",)),
        }

    def searched(self, result: dict) -> None:
        try:   # counting must never fail the search it counts
            for name, value, tags in observations(result):
                metric = self.metrics[name]
                if name in ("scanned", "stage_ms"):
                    metric.observe(float(value), tags=tags)
                else:
                    metric.inc(value, tags=tags)
        except Exception as exc:  # noqa: BLE001
            log.warning("a search was not counted: %s", exc)

    def written(self, op: str) -> None:
        self.metrics["written"].inc(1, tags={"op": op})
