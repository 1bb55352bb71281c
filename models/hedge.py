"""A query's second search, for its runner-up category, and the merge of the two answers.

`models.pipeline.hedge_terms` says when a photo hedges and what the second search
asks. Here the two searches go to the index in one batch, and their answers become one
hit list (merge_hits). The scores are comparable: both searches score the same code and
histogram with the same weights and optional tokens.
"""
from __future__ import annotations

from dataclasses import replace

from shards.query import Hit, Query


def hedge_query(query: Query, terms: dict | None) -> Query | None:
    """`query` asking for the hedge's terms instead (same photo, k, weights and filters), or None."""
    if terms is None:
        return None
    return replace(query, filters=query.filters + tuple(terms["filters"]), required=tuple(terms["required"]),
                   optional=tuple(terms["optional"]), widen=terms["widen"], scan_budget=terms["scan_budget"])


def hedged_category(hedge: Query | None) -> str | None:
    """The runner-up category token a hedge searched (its last filter, hedge_query), or None."""
    return hedge.filters[-1] if hedge is not None else None


def with_hedges(queries: list[Query], hedges: list[Query | None]) -> list[Query]:
    """The batch to search: every query, then each hedge there is, in order."""
    if len(queries) != len(hedges):
        raise ValueError(f"{len(queries)} queries but {len(hedges)} hedges")
    return list(queries) + [h for h in hedges if h is not None]


def paired(results: list, hedges: list[Query | None]) -> list[tuple]:
    """(result, the hedge's result or None) per query, from the answers to with_hedges(queries, hedges)."""
    n = len(hedges)
    extra = iter(results[n:])
    out = [(r, next(extra) if h is not None else None) for r, h in zip(results[:n], hedges)]
    if next(extra, None) is not None:
        raise ValueError("more answers than queries and hedges")
    return out


def answers(results: list, hedges: list[Query | None]) -> list[tuple]:
    """Per query: (its result, its hits merged with its hedge's, the hedge's result or None), from
    the answers to with_hedges(queries, hedges); a result is anything with `hits`."""
    return [(r, list(r.hits) if rh is None else merge_hits(r.hits, rh.hits, h.k), rh)
            for (r, rh), h in zip(paired(results, hedges), hedges)]


def merge_hits(hits, hedge_hits, k: int) -> list[Hit]:
    """The read category's hits, after the runner-up's that beat all of them (score, then id key); k at most.

    A runner-up's product comes first only where it matches the photo better than
    anything of the category read: on a street crop that is the product the model
    misread; on a photo whose category was read right, the runner-up's merely similar
    items stay out of the ranking (merged by score alone, they cost category-level mAP,
    models/RESULTS.md). Both lists are sorted, so the result is too, and no item is in
    both: whatever the first search found scores no better than its own best.
    """
    bar = hits[0].sort_key() if hits else (float("inf"), 0)
    return ([h for h in hedge_hits if h.sort_key() < bar] + list(hits))[:k]
