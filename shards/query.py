"""A query and the one documented shape of its answer.

Score (lower is better):

    score = w_hamming * hamming / B  -  w_optional * (optional tokens matched)
            + w_colour * colour_distance

Hits are ordered by (score, id key): ties break by id, so results are
deterministic and merges across shards are a pure function.

Constraints: `filters` are hard (never dropped); `required` are ordered most
confident first and may be relaxed, last first, when fewer than k items satisfy
them; `optional` only improve a hit's score. Relaxation level j means the last j
of `required` were dropped.

A scan budget widens the search: with `scan_budget` = b > 0, the last `widen` of
`required` are narrowing tokens, kept only while the candidates would otherwise
pass b x the catalog. The level is then the most relaxed one, up to `widen`, whose
candidates fit the budget (never fewer than the k rule's level; see choose_level).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .codes import as_codes, check_token, quantize_hists
from .errors import InvalidInput

MAX_K = 1000
MAX_TOKENS = 64  # distinct tokens per query: an answer marks the ones a hit carries in a 64-bit mask
DEFAULT_W_HAMMING = 1.0
DEFAULT_W_COLOUR = 0.3
DEFAULT_W_OPTIONAL = 0.05


@dataclass(frozen=True)
class Query:
    code: np.ndarray                 # (B/64,) uint64 packed appearance code
    hist: np.ndarray                 # (bins,) colour histogram, any non-negative scale
    k: int = 10
    required: tuple[str, ...] = ()   # relaxable, most confident first
    filters: tuple[str, ...] = ()    # hard constraints
    optional: tuple[str, ...] = ()   # each match lowers the score by w_optional
    w_hamming: float = DEFAULT_W_HAMMING
    w_colour: float = DEFAULT_W_COLOUR
    w_optional: float = DEFAULT_W_OPTIONAL
    widen: int = 0                   # the last `widen` required tokens narrow only a scan over budget
    scan_budget: float = 0.0         # share of the catalog worth scanning; 0 = no budget


@dataclass(frozen=True, init=False)
class PreparedQuery:
    """A validated query in the form the kernel reads.

    Its own __init__ fills the instance dict in one step: a frozen dataclass's
    generated one sets each field through object.__setattr__, 5 us a query, which
    a 256-query batch paid in the router and again in every shard (1.3 ms each).
    """
    code: np.ndarray                 # (W,) uint64
    qhist: np.ndarray                # (bins,) uint8, quantised
    k: int
    required: tuple[str, ...]
    filters: tuple[str, ...]
    optional: tuple[str, ...]
    w_hamming: float
    w_colour: float
    w_optional: float
    widen: int
    scan_budget: float

    def __init__(self, code, qhist, k, required, filters, optional, w_hamming, w_colour, w_optional,
                 widen=0, scan_budget=0.0):
        # every token of the query once (filters, required, optional): what a hit's `matched` is out of
        tokens = tuple(dict.fromkeys(filters + required + optional))
        if len(tokens) > MAX_TOKENS:
            raise InvalidInput(f"a query has at most {MAX_TOKENS} distinct tokens, got {len(tokens)}")
        if not 0 <= widen <= len(required):
            raise InvalidInput(f"widen must be in [0, {len(required)}] (the required tokens), got {widen!r}")
        self.__dict__.update(code=code, qhist=qhist, k=k, required=required, filters=filters, optional=optional,
                             w_hamming=w_hamming, w_colour=w_colour, w_optional=w_optional, widen=widen,
                             scan_budget=scan_budget, tokens=tokens)

    def constraints(self, level: int) -> tuple[str, ...]:
        """Tokens every hit must carry at relaxation level `level`."""
        return self.filters + self.required[: len(self.required) - level]

    def relaxed(self, level: int) -> tuple[str, ...]:
        return tuple(reversed(self.required[len(self.required) - level:])) if level else ()


def choose_level(counts, k: int, n_required: int, widen: int = 0, budget: float = 0.0) -> int:
    """The relaxation level of a query from its candidate counts per level (counts[j]: the
    items satisfying level j's constraints, every level up to the one chosen known).

    The k rule: the least level with >= k candidates (all relaxed if none has). A budget
    (in items) then widens it (widened_level).
    """
    level = next((j for j, n in enumerate(counts) if n >= k), n_required)
    return widened_level(level, counts, widen, budget)


def widened_level(level: int, counts, widen: int, budget: float) -> int:
    """The most relaxed level from `level` up to `widen` whose candidates fit `budget` items.

    Counts grow with the level, so these levels are a run; if even `level` does not fit,
    it stays. `counts` need only be exact up to where the answer lies (a level missing
    from it does not fit).
    """
    if budget <= 0:
        return level
    fits = [j for j in range(level, min(widen, len(counts) - 1) + 1) if counts[j] <= budget]
    return fits[-1] if fits else level


def check_k(k, max_k: int = MAX_K) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= max_k:
        raise InvalidInput(f"k must be an integer in [1, {max_k}], got {k!r}")
    return int(k)


def _weight(name: str, w) -> float:
    if type(w) is float and 0.0 <= w < math.inf:  # the common case, without numpy's scalar checks
        return w
    if isinstance(w, bool) or not isinstance(w, (int, float, np.floating, np.integer)):
        raise InvalidInput(f"{name} must be a number, got {w!r}")
    w = float(w)
    if not math.isfinite(w) or w < 0:
        raise InvalidInput(f"{name} must be finite and >= 0, got {w!r}")
    return w


@lru_cache(maxsize=1 << 14)
def _valid_tokens(name: str, toks: tuple) -> tuple[str, ...]:
    out = tuple(check_token(t) for t in toks)
    if len(set(out)) != len(out):
        raise InvalidInput(f"{name} has a repeated token: {list(out)!r}")
    return out


def check_tokens(name: str, toks) -> tuple[str, ...]:
    """Validated tokens; a batch repeats a few token lists many times, so each is checked once."""
    if isinstance(toks, str):
        raise InvalidInput(f"{name} must be a list of tokens, got the string {toks!r}")
    try:
        toks = tuple(toks)
    except TypeError:
        raise InvalidInput(f"{name} must be a list of tokens, got {toks!r}") from None
    try:
        return _valid_tokens(name, toks)
    except TypeError:  # an unhashable item, so not a token: check_token says which
        return tuple(check_token(t) for t in toks)


def prepare_many(queries, bits: int, bins: int, max_k: int = MAX_K) -> list[PreparedQuery]:
    """prepare() for a batch: the colour histograms are quantised in one numpy pass, not one per query.

    A batch with a bad histogram is prepared query by query, so the error is that
    query's own.
    """
    qs = [q for q in queries if not isinstance(q, PreparedQuery)]
    if not qs:
        return list(queries)
    try:
        hists = np.stack([np.asarray(q.hist) for q in qs])
        qhists = iter(quantize_hists(hists, bins, n=len(qs)))
    except (InvalidInput, ValueError):
        return [q if isinstance(q, PreparedQuery) else prepare(q, bits, bins, max_k) for q in queries]
    return [q if isinstance(q, PreparedQuery) else _prepared(q, bits, next(qhists), max_k) for q in queries]


def prepare(query: Query, bits: int, bins: int, max_k: int = MAX_K) -> PreparedQuery:
    return _prepared(query, bits, quantize_hists(query.hist, bins, n=1)[0], max_k)


def _prepared(query: Query, bits: int, qhist: np.ndarray, max_k: int) -> PreparedQuery:
    code = as_codes(query.code, bits)
    if code.shape[0] != 1:
        raise InvalidInput(f"a query has one code, got {code.shape[0]}")
    return PreparedQuery(
        code=code[0],
        qhist=qhist,
        k=check_k(query.k, max_k),
        required=check_tokens("required", query.required),
        filters=check_tokens("filters", query.filters),
        optional=check_tokens("optional", query.optional),
        w_hamming=_weight("w_hamming", query.w_hamming),
        w_colour=_weight("w_colour", query.w_colour),
        w_optional=_weight("w_optional", query.w_optional),
        widen=_count("widen", query.widen),
        scan_budget=_share("scan_budget", query.scan_budget),
    )


def _count(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InvalidInput(f"{name} must be a non-negative integer, got {n!r}")
    return int(n)


def _share(name: str, x) -> float:
    x = _weight(name, x)
    if x > 1:
        raise InvalidInput(f"{name} is a share of the catalog, in [0, 1], got {x!r}")
    return x


class Hit(NamedTuple):
    """One result. A NamedTuple: cheap to build k of them per query, and picklable."""
    id: int | str
    key: int                  # 64-bit id key (tie-break order)
    score: float
    hamming: int
    colour_distance: float
    matched: tuple[str, ...]  # query tokens (any kind) the item carries
    meta: dict = {}           # the item's small metadata (title, image reference); not compared by merges

    def sort_key(self):
        return (self.score, self.key)

    def to_dict(self) -> dict:
        return {"id": self.id, "score": self.score, "hamming": self.hamming,
                "colour_distance": self.colour_distance, "matched": list(self.matched), **self.meta}


@dataclass(frozen=True)
class ShardResult:
    """One shard's answer to one query at one relaxation level.

    counts[j] is the number of items satisfying the constraints of level j, for
    j = 0 .. len(counts) - 1; counting stops at the first level where the shard
    alone has k candidates (later levels only have more), or with a scan budget at
    level `widen` if that is later.
    """
    hits: tuple[Hit, ...]
    level: int
    relaxed: tuple[str, ...]
    counts: tuple[int, ...]
    scanned: int = 0
    view: int = 0             # the placement version whose hidden buckets this answer respects
