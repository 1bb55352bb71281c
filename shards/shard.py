"""One slice of the catalog: items, their postings, the fused scan, and durability.

In memory: one `Block` per value of the partition field (so a category's codes are
contiguous), an `IdIndex` from id key to (block, row), and per-block roaring
postings for the other attribute tokens. On disk (one directory): the newest two
snapshots plus the write-ahead log segments needed to replay from the older one.

Every write is validated in full, logged and fsync'd, and only then applied, so a
rejected batch changes nothing and an acknowledged one survives a crash.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pyroaring import BitMap

from . import kernels
from .answer import Answer, token_mask
from .block import Block
from .codes import (as_codes, bucket_of_keys, check_bits, check_token, id_key, id_keys, quantize_hists, token_field)
from .errors import CorruptData, InvalidInput, NotFound, StorageError
from .files import write_atomically
from .idindex import MISSING, IdIndex
from .plan import QueryArrays, ScanPlan
from .query import MAX_K, PreparedQuery, Query, ShardResult, choose_level, prepare, prepare_many
from .snapshot import list_snapshots, read_snapshot, write_snapshot
from .wal import WalWriter, fsync_dir, list_segments, read_segment, segment_name

SNAPSHOT_FORMAT = 1   # the layout of _dump_doc; a reader refuses a newer one rather than guess

log = logging.getLogger(__name__)

MAX_TITLE = 1000
MAX_META_FIELD = 2000
MAX_LIST = 10_000   # items in one page of a listing


def _tokens_of_rows(block: Block, rows: list[int]) -> dict[int, list[str]]:
    """Each row's tokens, its block's partition token included: one intersection per posting, not a
    lookup of every posting per row."""
    out = {r: ([block.name] if block.name else []) for r in rows}
    chosen = BitMap(np.asarray(rows, np.uint32))
    for t, bm in block.postings.items():
        for r in bm & chosen:
            out[r].append(t)
    return out


@dataclass(frozen=True)
class ShardConfig:
    bits: int = 256
    hist_bins: int = 64
    partition_field: str = "articleType"
    max_k: int = MAX_K

    def __post_init__(self):
        check_bits(self.bits)
        if not isinstance(self.hist_bins, int) or not 1 <= self.hist_bins <= 4096:
            raise InvalidInput(f"hist_bins must be an int in [1, 4096], got {self.hist_bins!r}")
        check_token(f"{self.partition_field}=x")


def _check_meta(meta) -> dict:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise InvalidInput(f"item metadata must be a dict, got {type(meta).__name__}")
    out = {}
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise InvalidInput(f"metadata fields are str -> str|number, got {key!r}: {value!r}")
        limit = MAX_TITLE if key == "title" else MAX_META_FIELD
        if isinstance(value, str) and len(value) > limit:
            raise InvalidInput(f"metadata field {key!r} is longer than {limit} characters")
        out[key] = value
    return out


class Shard:
    """A catalog slice. `Shard(path)` opens (or with `config`, creates) its directory.

    path=None keeps it in memory only (tests and benchmarks of pure speed). read_only=True
    reads what the directory holds and changes none of its files (a check of a storage root
    or a backup): a torn log tail is not cut, damage is not folded into a snapshot, and
    writes are refused.
    """

    def __init__(self, path: str | os.PathLike | None, config: ShardConfig | None = None,
                 *, fsync: bool = True, create: bool = True, read_only: bool = False):
        self.path = Path(path) if path is not None else None
        self.fsync = fsync
        self.read_only = read_only
        self.lock = threading.RLock()
        self.warnings: list[str] = []
        self.damaged = False   # recovery fell back to an older snapshot or skipped damaged log records
        self.seq = 0
        self.wal: WalWriter | None = None
        self.compaction_error: str | None = None   # the last failed maybe_compact, until one succeeds
        self.closed = False
        self.view: tuple[int, int, tuple[int, ...]] = (0, 1, ())  # see set_view
        self._token_fields: dict[str, str] = {}  # tokens already checked -> their field
        self.config = self._load_or_create_config(config, create and not read_only)
        self.words = self.config.bits // 64
        self.inv_bits = 1.0 / self.config.bits
        self._reset()
        if self.path is not None:
            self._recover()

    # ---------------------------------------------------------------- state
    def _reset(self) -> None:
        self.blocks: list[Block] = []
        self.block_ids: dict[str, int] = {}
        self.index = IdIndex()
        self._bucket_cache: dict[int, tuple[int, np.ndarray]] = {}  # block -> (n_buckets, row buckets)

    def _block(self, name: str) -> int:
        bid = self.block_ids.get(name)
        if bid is None:
            bid = len(self.blocks)
            self.blocks.append(Block(name, self.words, self.config.hist_bins))
            self.block_ids[name] = bid
        return bid

    def __len__(self) -> int:
        return len(self.index)

    # ---------------------------------------------------------------- writes
    def upsert(self, ids, codes, hists, attributes, metas=None, *, quantised: bool = False) -> int:
        """Insert or replace items. Returns how many were written; durable on return."""
        batch = self._validate_upsert(ids, codes, hists, attributes, metas, quantised)
        with self.lock:
            self._log({"op": "upsert", "ids": batch["ids"], "codes": batch["codes"].tobytes(),
                       "hists": batch["hists"].tobytes(), "attrs": batch["attrs"], "meta": batch["meta"]})
            self._apply_upsert(batch)
        return len(batch["ids"])

    def delete(self, ids) -> int:
        """Delete items by id (absent ids are ignored). Returns how many existed."""
        ids = list(ids)
        keys = id_keys(ids)
        if len(set(keys.tolist())) != len(keys):
            raise InvalidInput("duplicate ids in a delete batch")
        with self.lock:
            self._log({"op": "delete", "ids": ids})
            return self._apply_delete(keys)

    def _validate_upsert(self, ids, codes, hists, attributes, metas, quantised) -> dict:
        ids = list(ids)
        n = len(ids)
        if n == 0:
            raise InvalidInput("an upsert batch needs at least one item")
        keys = id_keys(ids)
        if len(np.unique(keys)) != n:
            raise InvalidInput("duplicate ids in an upsert batch")
        codes = as_codes(codes, self.config.bits, n)
        if quantised:
            hists = np.ascontiguousarray(hists, dtype=np.uint8).reshape(n, self.config.hist_bins)
        else:
            hists = quantize_hists(hists, self.config.hist_bins, n)
        attributes = list(attributes)
        if len(attributes) != n:
            raise InvalidInput(f"expected {n} attribute lists, got {len(attributes)}")
        attrs = []
        fields = self._token_fields
        for toks in attributes:
            if isinstance(toks, str):
                raise InvalidInput(f"attributes of an item are a list of tokens, got the string {toks!r}")
            toks = sorted(set(toks))
            parts = 0
            for t in toks:
                f = fields.get(t) if isinstance(t, str) else None
                if f is None:   # a token not seen before: check its syntax once
                    f = token_field(check_token(t))
                    if len(fields) < 1_000_000:
                        fields[t] = f
                parts += f == self.config.partition_field
            if parts > 1:
                raise InvalidInput(f"an item has at most one {self.config.partition_field}= token, got {toks!r}")
            attrs.append(toks)
        metas = [{}] * n if metas is None else [_check_meta(m) for m in metas]
        if len(metas) != n:
            raise InvalidInput(f"expected {n} metadata entries, got {len(metas)}")
        return {"ids": [int(i) if isinstance(i, (int, np.integer)) else i for i in ids], "keys": keys,
                "codes": codes, "hists": hists, "attrs": attrs, "meta": metas}

    def _log(self, record: dict) -> None:
        """Make the record durable (a shard with a directory) before it is applied."""
        if self.path is not None:
            if self.closed:
                raise StorageError(f"shard {self.path} is closed")
            if self.read_only:
                raise StorageError(f"shard {self.path} was opened read-only")
            if self.wal is None:   # a compaction wrote its snapshot but could not open the next segment
                self.wal = WalWriter(self.path / segment_name(self.seq + 1), self.fsync)
            self.wal.append(self.seq + 1, record)
        self.seq += 1

    def _apply_upsert(self, b: dict) -> None:
        keys = b["keys"]
        old = self.index.get_many(keys)
        for loc in old[old != MISSING].tolist():
            self.blocks[loc >> 32].delete(loc & 0xFFFFFFFF)
        pfield = self.config.partition_field
        groups: dict[str, list[int]] = {}
        fields = self._token_fields
        for i, toks in enumerate(b["attrs"]):
            part = next((t for t in toks if (fields.get(t) or token_field(t)) == pfield), "")
            groups.setdefault(part, []).append(i)
        locs = np.empty(len(keys), np.int64)
        for part, members in groups.items():
            bid = self._block(part)
            idx = np.array(members, np.int64)
            rows = self.blocks[bid].append(
                b["codes"][idx], b["hists"][idx], keys[idx],
                [[t for t in b["attrs"][i] if t != part] for i in members],
                [b["ids"][i] if isinstance(b["ids"][i], str) else None for i in members],
                [b["meta"][i] for i in members])
            locs[idx] = (np.int64(bid) << 32) | rows
        self.index.set_many(keys, locs, old)
        self._maybe_rebuild_index()

    def _apply_delete(self, keys: np.ndarray) -> int:
        old = self.index.get_many(keys)
        for loc in old[old != MISSING].tolist():
            self.blocks[loc >> 32].delete(loc & 0xFFFFFFFF)
        self.index.remove_many(keys, old)
        self._maybe_rebuild_index()
        return int((old != MISSING).sum())

    def _maybe_rebuild_index(self) -> None:
        if self.index.wants_rebuild():
            self.index = IdIndex(self.blocks)

    # ---------------------------------------------------------------- reads
    def _locate(self, item_id) -> tuple[Block, int]:
        loc = self.index.get(id_key(item_id))
        if loc == MISSING:
            raise NotFound(f"no item with id {item_id!r}")
        block = self.blocks[loc >> 32]
        row = loc & 0xFFFFFFFF
        if isinstance(item_id, str) and block.item_id(row) != item_id:
            raise NotFound(f"no item with id {item_id!r}")  # another string with the same hash
        return block, row

    def get(self, item_id) -> dict:
        with self.lock:
            block, row = self._locate(item_id)
            return {"id": block.item_id(row), "code": block.codes[row].copy(),
                    "hist": block.hists[row].copy(), "attributes": block.tokens_of(row),
                    "meta": dict(block.meta.get(row, {}))}

    def contains(self, item_id) -> bool:
        try:
            self._locate(item_id)
            return True
        except NotFound:
            return False

    def contains_many(self, ids) -> list[bool]:
        with self.lock:
            return [self.contains(i) for i in ids]

    def ids(self) -> list:
        with self.lock:
            return [b.item_id(r) for b in self.blocks for r in b.alive_rows().tolist()]

    def stats(self) -> dict:
        with self.lock:
            postings = sum(len(b.postings) for b in self.blocks)
            return {"items": len(self), "blocks": len(self.blocks), "postings": postings,
                    "rows": sum(b.n for b in self.blocks), "seq": self.seq,
                    "bytes": sum(b.nbytes() for b in self.blocks) + self.index.nbytes(self.blocks),
                    "wal_bytes": self.wal.size if self.wal else 0,
                    "config": asdict(self.config), "warnings": list(self.warnings),
                    "compaction_error": self.compaction_error}

    # ---------------------------------------------------------------- search
    def prepare(self, query: Query) -> PreparedQuery:
        return prepare(query, self.config.bits, self.config.hist_bins, self.config.max_k)

    def _candidates(self, block: Block, tokens: tuple[str, ...], hidden: BitMap | None = None):
        """None = every alive row of the block; else a BitMap of rows. `hidden` rows never count."""
        cand = self._token_candidates(block, tokens)
        if hidden:
            cand = (BitMap(block.alive_rows().astype(np.uint32)) if cand is None else cand) - hidden
        return cand

    def _matches(self, tokens: tuple[str, ...], hidden, cache: dict) -> tuple[int, list]:
        """(items carrying every token, [(block id, candidates)] of the blocks with any).

        `cache` (a dict, one per search call) keeps each constraint set's answer, so
        counting the levels and then planning the scan intersect postings once.
        """
        got = cache.get(tokens)
        if got is not None:
            return got
        total, where = 0, []
        for bid in self._block_ids_for(tokens):
            block = self.blocks[bid]
            if block.n_alive == 0:
                continue
            cand = self._candidates(block, tokens, hidden[bid])
            n = block.n_alive if cand is None else len(cand)
            if n:
                total += n
                where.append((bid, cand))
        cache[tokens] = got = (total, where)
        return got

    def _hidden_rows(self, bid: int, exclude) -> BitMap | None:
        """Rows of block `bid` whose bucket is excluded (a bucket this shard holds but does not own)."""
        if not exclude or not exclude[1]:
            return None
        n_buckets, buckets = exclude
        mask = np.zeros(n_buckets, bool)
        mask[list(buckets)] = True
        rows = np.flatnonzero(mask[self._row_buckets(bid, n_buckets)])
        return BitMap(rows.astype(np.uint32)) if len(rows) else None

    def _row_buckets(self, bid: int, n_buckets: int) -> np.ndarray:
        """The bucket of each row of block `bid` (a row's id never changes, so this is kept; 2 bytes a row)."""
        block = self.blocks[bid]
        cached = self._bucket_cache.get(bid)
        if cached is None or cached[0] != n_buckets or len(cached[1]) < block.n:
            dtype = np.uint16 if n_buckets <= 2**16 else np.int64
            cached = (n_buckets, bucket_of_keys(block.keys[: block.n], n_buckets).astype(dtype))
            self._bucket_cache[bid] = cached
        return cached[1][: block.n]

    def _token_candidates(self, block: Block, tokens: tuple[str, ...]):
        prefix = self.config.partition_field + "="
        others = []
        for t in tokens:
            if t.startswith(prefix):
                if t != block.name:
                    return BitMap()
            else:
                bm = block.postings.get(t)
                if bm is None:
                    return BitMap()
                others.append(bm)
        if not others:
            return None
        others.sort(key=len)
        acc = others[0]
        for bm in others[1:]:
            acc = acc & bm
            if not acc:
                break
        return acc

    def _block_ids_for(self, tokens) -> list[int]:
        """Blocks that can hold a match: the category's own block when a category is required."""
        prefix = self.config.partition_field + "="
        parts = {t for t in tokens if t.startswith(prefix)}
        if not parts:
            return list(range(len(self.blocks)))
        if len(parts) > 1:
            return []
        bid = self.block_ids.get(parts.pop())
        return [] if bid is None else [bid]

    def _choose_levels(self, qs, levels, hidden, cache) -> tuple[list[tuple[int, ...]], list[int], list[tuple]]:
        """Each query's candidates per level, its level, and the constraint set it scans (sorted,
        so queries asking the same in any order share a scan).

        Counts run to the first level with k candidates; with a scan budget, at least to
        `widen` too, so a router can add up every shard's counts at the levels the budget
        may choose. Queries with the same filters and required tokens share one list of
        counts, extended only as far as one of them needs.
        """
        known: dict[tuple, list[int]] = {}
        keys: dict[tuple, tuple] = {}
        counts, chosen, scans = [], [], []
        size = None
        for q, lv in zip(qs, levels):
            c = known.setdefault((q.filters, q.required), [])
            top = len(q.required)
            enough = next((j for j, n in enumerate(c) if n >= q.k), None)
            while enough is None and len(c) <= top:
                c.append(self._matches(self._scan_key(q, len(c), keys), hidden, cache)[0])
                if c[-1] >= q.k:
                    enough = len(c) - 1
            upto = top + 1 if enough is None else enough + 1
            if q.scan_budget > 0:
                while len(c) <= q.widen:
                    c.append(self._matches(self._scan_key(q, len(c), keys), hidden, cache)[0])
                upto = max(upto, q.widen + 1)
                if lv is None:   # this shard alone: the budget is a share of what it holds
                    size = self._visible_size(hidden, cache) if size is None else size
                    lv = choose_level(c, q.k, top, q.widen, q.scan_budget * size)
            elif lv is None:     # choose_level without a budget: the first level with k candidates
                lv = top if enough is None else enough
            elif not isinstance(lv, int) or isinstance(lv, bool) or not 0 <= lv <= top:
                raise InvalidInput(f"level must be in [0, {top}], got {lv!r}")
            counts.append(tuple(c[:upto]))
            chosen.append(lv)
            scans.append(self._scan_key(q, lv, keys))
        return counts, chosen, scans

    def _visible_size(self, hidden, cache) -> int:
        """Items this shard answers for: alive, and not in a bucket it only holds a copy of."""
        return self._matches((), hidden, cache)[0]

    @staticmethod
    def _scan_key(q: PreparedQuery, level: int, keys: dict) -> tuple:
        k = (q.filters, q.required, level)
        got = keys.get(k)
        if got is None:
            keys[k] = got = tuple(sorted(q.constraints(level)))
        return got

    def search(self, query: Query | PreparedQuery, level: int | None = None) -> ShardResult:
        return self.search_batch([query], [level])[0]

    def set_view(self, version: int, n_buckets: int, hidden_buckets) -> None:
        """Which buckets this shard holds but must not answer for, as of placement `version`.

        During a rebalance a shard holds copies of buckets it does not own yet (being
        copied in) or any more (waiting to be deleted). Every answer carries the view
        version, so a router that sees two versions in one query knows it straddled a
        change and asks again.
        """
        with self.lock:
            self.view = (int(version), int(n_buckets), tuple(sorted(int(b) for b in hidden_buckets)))

    def search_batch(self, queries, levels=None, exclude=None) -> list[ShardResult]:
        """Answer many queries, one ShardResult each (see search_columns)."""
        qs = prepare_many(queries, self.config.bits, self.config.hist_bins, self.config.max_k)
        return self.search_columns(qs, levels, exclude).results(qs)

    def search_columns(self, queries, levels=None, exclude=None) -> Answer:
        """Answer many queries as one columnar Answer; queries with the same constraints share a scan.

        levels[i] = None relaxes locally (the least relaxation giving k candidates);
        an int fixes the level (the coordinator's global relaxation).
        exclude = (n_buckets, buckets) overrides the view's hidden buckets.
        """
        qs = prepare_many(queries, self.config.bits, self.config.hist_bins, self.config.max_k)
        levels = [None] * len(qs) if levels is None else list(levels)
        if len(levels) != len(qs):
            raise InvalidInput("one level per query")
        if not qs:
            return Answer.empty(self.view[0])
        with self.lock:
            version, n_buckets, buckets = self.view
            exclude = exclude if exclude is not None else (n_buckets, buckets)
            hidden = ([self._hidden_rows(bid, exclude) for bid in range(len(self.blocks))] if exclude[1]
                      else [None] * len(self.blocks))
            cache: dict = {}
            counts, chosen, scans = self._choose_levels(qs, levels, hidden, cache)
            groups: dict[tuple, list[int]] = {}
            for i, tokens in enumerate(scans):
                groups.setdefault(tokens, []).append(i)
            batch = QueryArrays(qs)
            heaps = kernels.new_heaps(len(qs), int(batch.k.max()))
            plan = ScanPlan(self.blocks, batch, self.inv_bits, heaps)
            scanned = np.zeros(len(qs), np.int64)
            bonus = [bool(q.optional) and q.w_optional > 0 for q in qs]   # which queries score optional tokens
            for tokens, members in groups.items():
                scanned[members] = self._plan_group(tokens, members, qs, hidden, cache, plan, bonus)
            plan.run()
            size = self._visible_size(hidden, cache) if any(q.scan_budget > 0 for q in qs) else 0
            return self._answer(qs, chosen, counts, scanned, heaps, version, size)

    def _plan_group(self, tokens, members: list[int], qs, hidden, cache, plan: ScanPlan, bonus: list[bool]) -> int:
        """The scan tasks of one constraint set for the queries `members`; returns the rows they scan."""
        total, where = self._matches(tokens, hidden, cache)
        if not where:
            return 0
        mlo, mhi = plan.add_members(members)
        use_bonus = any(map(bonus.__getitem__, members))
        for bid, cand in where:
            block = self.blocks[bid]
            bonus = self._bonus(block, [qs[i] for i in members]) if use_bonus else None
            plan.add_task(bid, block, cand, mlo, mhi, bonus)
        return total

    def _bonus(self, block: Block, qs: list[PreparedQuery]) -> np.ndarray:
        bonus = np.zeros((len(qs), block.n), np.uint8)  # counts <= MAX_TOKENS; a byte a row keeps it small
        for j, q in enumerate(qs):
            for t in q.optional:
                if t == block.name:
                    bonus[j] += 1
                else:
                    bm = block.postings.get(t)
                    if bm is not None:
                        bonus[j, np.frombuffer(bm.to_array(), np.uint32)] += 1
        return bonus

    def _answer(self, qs, levels, counts, scanned, heaps, version: int, size: int) -> Answer:
        """The heaps sorted best first, with every winner's tokens, id and metadata."""
        hs, hk, hr, hh, hc, hn = heaps
        order = np.lexsort((hk, hs), axis=-1)  # padding (score +inf) sorts last
        at = (np.arange(len(qs))[:, None], order)
        scores, keys, locs, hamming, colour = hs[at], hk[at], hr[at], hh[at], hc[at]
        n = hn                                 # a query's heap holds at most its own k
        valid = np.arange(scores.shape[1]) < n[:, None]
        scores[~valid] = np.inf
        loc = locs[valid]                      # query by query, best first
        bids, rows = loc >> 32, loc & 0xFFFFFFFF
        matched = np.zeros(scores.shape, np.uint64)
        ids, metas = [None] * len(loc), [{}] * len(loc)
        for bid in set(bids.tolist()):  # only blocks with string ids or metadata cost a loop
            block = self.blocks[bid]
            if block.str_ids or block.meta:
                for p in np.flatnonzero(bids == bid).tolist():
                    row = int(rows[p])
                    ids[p] = block.str_ids.get(row)
                    metas[p] = block.meta.get(row, {})
        p = 0
        bid_list, row_list = bids.tolist(), rows.tolist()   # plain ints: the loop below is per hit
        for i, (q, lv, ni) in enumerate(zip(qs, levels, n.tolist())):
            if lv == 0 and not q.optional:  # every token is a constraint: the common case
                matched[i, :ni] = (1 << len(q.tokens)) - 1
                p += ni
                continue
            sure = set(q.constraints(lv))  # every candidate at level lv carries these
            unsure = [(1 << j, t) for j, t in enumerate(q.tokens) if t not in sure]
            sure_mask = token_mask(q.tokens, sure)
            if not unsure:
                matched[i, :ni] = sure_mask
            else:
                masks = []
                for bid, row in zip(bid_list[p: p + ni], row_list[p: p + ni]):
                    block = self.blocks[bid]
                    name, postings, mask = block.name, block.postings, sure_mask
                    for bit, t in unsure:
                        if t == name or row in postings.get(t, ()):
                            mask |= bit
                    masks.append(mask)
                matched[i, :ni] = masks
            p += ni
        return Answer(scores=scores, keys=keys, hamming=hamming, colour=colour, matched=matched, n=n,
                      ids=ids, metas=metas, levels=np.asarray(levels, np.int64), counts=counts,
                      scanned=scanned, view=version, size=size)

    # ---------------------------------------------------------------- buckets (rebalancing)
    def export_buckets(self, buckets, n_buckets: int) -> dict:
        """Every item whose id falls in one of `buckets`, as an upsert batch (quantised)."""
        wanted = np.zeros(n_buckets, bool)
        wanted[np.asarray(list(buckets), np.int64)] = True
        ids, codes, hists, attrs, metas = [], [], [], [], []
        with self.lock:
            for block in self.blocks:
                rows = block.alive_rows()
                rows = rows[wanted[bucket_of_keys(block.keys[rows], n_buckets)]]
                if len(rows) == 0:
                    continue
                at = _tokens_of_rows(block, rows.tolist())
                for r in rows.tolist():
                    ids.append(block.item_id(r))
                    attrs.append(sorted(at[r]))
                    metas.append(dict(block.meta.get(r, {})))
                codes.append(block.codes[rows])
                hists.append(block.hists[rows])
        return {"ids": ids, "codes": np.concatenate(codes) if codes else np.zeros((0, self.words), np.uint64),
                "hists": np.concatenate(hists) if hists else np.zeros((0, self.config.hist_bins), np.uint8),
                "attributes": attrs, "metas": metas}

    def list_positions(self, buckets, n_buckets: int, after: tuple[int, int] | None = None, limit: int = 1000,
                       required: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
        """The positions (bucket, id key) of the first `limit` items of `buckets` in that order, strictly
        after `after` (None: from the start), carrying every `required` token: the first round of a
        page of the catalog's listing (coordinator/listing.py), as two arrays."""
        with self.lock:
            _, _, _, bks, keys = self._page(buckets, n_buckets, after, limit, required, None)
            return bks, keys

    def list_items(self, buckets, n_buckets: int, after: tuple[int, int] | None = None, limit: int = 1000,
                   required: tuple[str, ...] = (), until: tuple[int, int] | None = None) -> list[dict]:
        """The items `list_positions` names, up to the position `until` (inclusive; None: no bound),
        each with its id, bucket, key, attributes and meta."""
        with self.lock:
            parts, which, rows, bks, keys = self._page(buckets, n_buckets, after, limit, required, until)
            tokens = {w: _tokens_of_rows(parts[w][0], rows[which == w].tolist()) for w in np.unique(which).tolist()}
            return [{"id": parts[w][0].item_id(r), "bucket": b, "key": k, "attributes": sorted(tokens[w][r]),
                     "meta": dict(parts[w][0].meta.get(r, {}))}
                    for w, r, b, k in zip(which.tolist(), rows.tolist(), bks.tolist(), keys.tolist())]

    def _page(self, buckets, n_buckets, after, limit, required, until):
        """(parts, and the page's rows sorted by position: which part, row, bucket, key)."""
        if not 1 <= limit <= MAX_LIST:
            raise InvalidInput(f"limit must be in [1, {MAX_LIST}], got {limit!r}")
        required = tuple(check_token(t) for t in required)
        wanted = np.zeros(n_buckets, bool)
        wanted[np.asarray(list(buckets), np.int64)] = True
        b0, k0 = (int(after[0]), np.uint64(after[1])) if after is not None else (-1, np.uint64(0))
        b1, k1 = (int(until[0]), np.uint64(until[1])) if until is not None else (n_buckets, np.uint64(0))
        parts = []      # (block, its rows in the window, their buckets, their keys)
        for bid in self._block_ids_for(required):
            block = self.blocks[bid]
            matching = self._token_candidates(block, required)   # None: no constraint within the block
            rows = block.alive_rows() if matching is None else np.asarray(matching.to_array(), np.int64)
            keys = block.keys[rows]
            bks = self._row_buckets(bid, n_buckets)[rows].astype(np.int64)
            keep = (wanted[bks] & ((bks > b0) | ((bks == b0) & (keys > k0)))
                    & ((bks < b1) | ((bks == b1) & (keys <= k1))))
            parts.append((block, rows[keep], bks[keep], keys[keep]))
        if sum(len(p[1]) for p in parts) > limit:   # only the buckets the page can reach need sorting
            counts = np.bincount(np.concatenate([p[2] for p in parts]), minlength=n_buckets)
            last = int(np.searchsorted(np.cumsum(counts), limit))
            parts = [(blk, r[b <= last], b[b <= last], k[b <= last]) for blk, r, b, k in parts]
        which = np.concatenate([np.full(len(p[1]), i) for i, p in enumerate(parts)] or [np.zeros(0, np.int64)])
        rows, bks, keys = (np.concatenate([p[j] for p in parts] or [np.zeros(0, dt)])
                           for j, dt in ((1, np.int64), (2, np.int64), (3, np.uint64)))
        order = np.lexsort((keys, bks))[:limit]
        return parts, which[order], rows[order], bks[order], keys[order]

    def bucket_counts(self, n_buckets: int) -> np.ndarray:
        with self.lock:
            counts = np.zeros(n_buckets, np.int64)
            for block in self.blocks:
                rows = block.alive_rows()
                np.add.at(counts, bucket_of_keys(block.keys[rows], n_buckets), 1)
            return counts

    def delete_buckets(self, buckets, n_buckets: int) -> int:
        """Delete every item in `buckets` (after a move), logged like any delete."""
        exported = self.export_buckets(buckets, n_buckets)
        return self.delete(exported["ids"]) if exported["ids"] else 0

    # ---------------------------------------------------------------- persistence
    def _load_or_create_config(self, config, create) -> ShardConfig:
        if self.path is None:
            return config or ShardConfig()
        meta = self.path / "shard.json"
        if meta.exists():
            try:
                stored = ShardConfig(**json.loads(meta.read_text()))
            except (ValueError, TypeError) as exc:
                raise CorruptData(f"{meta}: unreadable shard config: {exc}") from exc
            if config is not None and config != stored:
                raise InvalidInput(f"{self.path} holds a shard with {stored}, not {config}")
            return stored
        if not create:
            raise StorageError(f"no shard at {self.path} (missing directory or shard.json)")
        if self.path.exists() and any(self.path.glob("snapshot-*")):
            raise CorruptData(f"{self.path}: snapshots without shard.json; refusing to start empty")
        config = config or ShardConfig()
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomically(meta, json.dumps(asdict(config)))
        return config

    def _recover(self) -> None:
        snapshots = list_snapshots(self.path)
        loaded_seq = None
        for seq, path in reversed(snapshots):
            try:
                self._load_doc(read_snapshot(path))
                loaded_seq = seq
                break
            except CorruptData as exc:
                self.warnings.append(f"{exc}; trying an older snapshot")
                self._reset()
        segments = list_segments(self.path)
        if snapshots and loaded_seq is None and (not segments or segments[0][0] > 1):
            raise CorruptData(f"{self.path}: no readable snapshot and the log does not reach back to "
                              "the first record; refusing to open with acknowledged data lost")
        self.seq = loaded_seq or 0
        damaged = loaded_seq != (snapshots[-1][0] if snapshots else None)
        for i, (first, path) in enumerate(segments):
            res = read_segment(path)
            self.warnings.extend(res.warnings)
            # A torn tail on the newest segment is an unacknowledged write cut by a crash:
            # normal. Anything else means acknowledged records were damaged.
            clean_tail = res.torn and i == len(segments) - 1 and len(res.warnings) == 1
            if res.warnings and not clean_tail:
                damaged = True
                if not self.read_only:
                    path.with_name(path.name + ".damaged").write_bytes(path.read_bytes())
            for seq, record in res.records:
                if seq <= self.seq:
                    continue
                if seq != self.seq + 1:
                    self.warnings.append(f"{path.name}: records {self.seq + 1}..{seq - 1} missing")
                    damaged = True
                self._replay(record)
                self.seq = seq
            if res.torn and not self.read_only:  # cut the tail off so new records follow intact ones
                with open(path, "r+b") as f:
                    f.truncate(res.good_end)
        for w in self.warnings:
            log.warning("shard %s: %s", self.path, w)
        self.damaged = damaged
        if self.read_only:
            return
        if damaged or not segments:
            # Fold what was recovered into a fresh snapshot so the damage is not read again.
            self.compact()
        else:
            self.wal = WalWriter(segments[-1][1], self.fsync)

    def _replay(self, record: dict) -> None:
        op = record.get("op")
        if op == "upsert":
            n = len(record["ids"])
            codes = np.frombuffer(record["codes"], np.uint64).reshape(n, self.words)
            hists = np.frombuffer(record["hists"], np.uint8).reshape(n, self.config.hist_bins)
            batch = self._validate_upsert(record["ids"], codes, hists, record["attrs"], record["meta"], True)
            self._apply_upsert(batch)
        elif op == "delete":
            self._apply_delete(id_keys(record["ids"]))
        else:
            raise CorruptData(f"unknown log record {op!r}")

    def _dump_doc(self) -> dict:
        blocks = []
        for b in self.blocks:
            blocks.append({"name": b.name, "n": b.n, "codes": b.codes[: b.n].tobytes(),
                           "hists": b.hists[: b.n].tobytes(), "keys": b.keys[: b.n].tobytes(),
                           "alive": b.alive[: b.n].tobytes(),
                           "postings": {t: bm.serialize() for t, bm in b.postings.items()},
                           "str_ids": {int(r): s for r, s in b.str_ids.items()},
                           "meta": {int(r): m for r, m in b.meta.items()}})
        return {"format": SNAPSHOT_FORMAT, "seq": self.seq, "config": asdict(self.config), "blocks": blocks}

    def _load_doc(self, doc: dict) -> None:
        fmt = doc.get("format") if isinstance(doc, dict) else None
        if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > SNAPSHOT_FORMAT:
            # not damage: falling back to an older snapshot could open with acknowledged items missing
            raise StorageError(f"{self.path}: a snapshot in format {fmt}, written by a newer fashion-search; "
                               f"this one reads format {SNAPSHOT_FORMAT}. Nothing was changed; run the newer version")
        if fmt != SNAPSHOT_FORMAT:
            raise CorruptData(f"snapshot format {fmt!r} is not one this version wrote")
        try:
            if doc["config"] != asdict(self.config):
                raise CorruptData(f"snapshot config {doc['config']} differs from shard.json")
            self._reset()
            for bid, d in enumerate(doc["blocks"]):
                b = Block(d["name"], self.words, self.config.hist_bins)
                n = d["n"]
                b.codes = np.frombuffer(d["codes"], np.uint64).reshape(n, self.words).copy()
                b.hists = np.frombuffer(d["hists"], np.uint8).reshape(n, self.config.hist_bins).copy()
                b.keys = np.frombuffer(d["keys"], np.uint64)  # IdIndex copies it into its base
                b.alive = np.frombuffer(d["alive"], np.uint8).copy()
                if len(b.keys) != n or len(b.alive) != n:
                    raise ValueError(f"block {d['name']!r}: {len(b.keys)} keys, {len(b.alive)} flags, {n} rows")
                b.n, b.n_alive = n, int(b.alive.sum())
                b.postings = {t: BitMap.deserialize(s) for t, s in d["postings"].items()}
                b.str_ids = {int(r): s for r, s in d["str_ids"].items()}
                b.meta = {int(r): m for r, m in d["meta"].items()}
                self.blocks.append(b)
                self.block_ids[b.name] = bid
            self.index = IdIndex(self.blocks)
        except CorruptData:
            raise
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptData(f"snapshot content is inconsistent: {exc}") from exc

    def compact(self) -> None:
        """Drop dead rows, write a snapshot, start a new log segment, prune old files."""
        if self.read_only:
            raise StorageError(f"shard {self.path} was opened read-only")
        with self.lock:
            self._densify()
            if self.path is None:
                return
            # before the log is closed: if the snapshot cannot be written (a full disk), writes
            # go on appending to the same log, and nothing acknowledged depends on the snapshot
            write_snapshot(self.path, self.seq, self._dump_doc(), self.fsync)
            old, self.wal = self.wal, None
            if old is not None:
                old.close()
            snaps = list_snapshots(self.path)
            keep_from = snaps[-2][0] if len(snaps) >= 2 else snaps[-1][0]
            for seq, p in snaps[:-2]:
                p.unlink()
            new_first = self.seq + 1
            segments = list_segments(self.path)
            for i, (first, p) in enumerate(segments):
                last = segments[i + 1][0] - 1 if i + 1 < len(segments) else self.seq
                if last <= keep_from and first != new_first:
                    p.unlink()
            self.wal = WalWriter(self.path / segment_name(new_first), self.fsync)   # failing, _log tries again
            fsync_dir(self.path)

    def maybe_compact(self, max_log_bytes: int) -> bool:
        """compact() once the log passes `max_log_bytes` (to keep a restart's replay short).

        Called after a write, which is durable in the log whatever happens here: a
        compaction that fails (a full disk) is not the write's error. It is kept in
        stats()["compaction_error"] and tried again after the next write.
        """
        if self.wal is None or self.wal.size <= max_log_bytes:
            return False
        try:
            self.compact()
        except StorageError as exc:
            self.compaction_error = str(exc)
            log.warning("shard %s: %s; the log keeps growing until a snapshot can be written", self.path, exc)
            return False
        self.compaction_error = None
        return True

    def _densify(self) -> None:
        self.blocks = [b.compacted() for b in self.blocks if b.n_alive]
        self.block_ids = {b.name: i for i, b in enumerate(self.blocks)}
        self._bucket_cache = {}
        self.index = IdIndex(self.blocks)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            if self.wal is not None:
                self.wal.close()
                self.wal = None
