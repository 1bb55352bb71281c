"""More like this: the query of an item already in the catalog, with no photo and no model.

A product page shows products that look like it. The item's stored code and colour
histogram are the query; what it is (its category, then its gender) is required, relaxed
gender first when too few items carry both; every other token it is indexed under (its
colour, season, usage, and the runners-up read for it) only adds to a hit's score.
"""
from __future__ import annotations

from shards.codes import dequantize_hist
from shards.query import MAX_K, Query

from .pipeline import CATEGORY_FIELD

REQUIRED_FIELDS = (CATEGORY_FIELD, "gender")   # in order: relaxation drops the last first


def similar_terms(tokens: list[str]) -> dict:
    """Required: the item's token of each REQUIRED_FIELDS field, in that order, where it has exactly
    one (an item indexed under a runner-up too, gender Men and Unisex say, requires neither: the
    stored tokens do not say which was read); optional: every other token."""
    required = []
    for field in REQUIRED_FIELDS:
        values = [t for t in tokens if t.split("=", 1)[0] == field]
        if len(values) == 1:
            required.append(values[0])
    return {"required": tuple(required), "optional": tuple(t for t in tokens if t not in required)}


def similar_query(item: dict, k: int, w_colour: float, filters: tuple[str, ...] = ()) -> Query:
    """The query for `item` (a shard's `get` answer); it asks for one more hit than `k`, since the
    item finds itself first (`without_item` drops it)."""
    return Query(code=item["code"], hist=dequantize_hist(item["hist"]), k=min(k + 1, MAX_K), w_colour=w_colour,
                 filters=tuple(filters), **similar_terms(list(item["attributes"])))


def without_item(hits: list, item_id, k: int) -> list:
    """The hits of a similar_query, less the item itself, at most k."""
    return [h for h in hits if h.id != item_id][:k]
