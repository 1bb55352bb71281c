"""A block: the rows of one partition (one fashion-category) laid out contiguously.

The paper's search first restricts to the query's category, so a shard keeps one
block per value of its partition field (e.g. articleType). A category-filtered
scan then reads one dense run of codes, and the other attributes' postings are
bitmaps over that block's local rows. Rows are append-only; a delete clears the
row's alive flag and removes it from the postings; compaction (`compacted`)
rewrites a block densely, its rows grouped so that postings compress into runs.
"""
from __future__ import annotations

import sys

import numpy as np
from pyroaring import BitMap

from .codes import token_field

GROWTH = 1.5


class Block:
    __slots__ = ("name", "n", "n_alive", "codes", "hists", "keys", "alive",
                 "postings", "str_ids", "meta")

    def __init__(self, name: str, words: int, bins: int, capacity: int = 0):
        self.name = name              # the partition token, "" for items without one
        self.n = 0                    # rows used (alive or not)
        self.n_alive = 0
        self.codes = np.zeros((capacity, words), np.uint64)
        self.hists = np.zeros((capacity, bins), np.uint8)
        self.keys = np.zeros(capacity, np.uint64)
        self.alive = np.zeros(capacity, np.uint8)
        self.postings: dict[str, BitMap] = {}   # token -> local rows (alive only)
        self.str_ids: dict[int, str] = {}       # local row -> string id (int ids need none)
        self.meta: dict[int, dict] = {}         # local row -> small metadata, off the hot path

    def _reserve(self, extra: int) -> None:
        need = self.n + extra
        cap = self.keys.shape[0]
        if need <= cap:
            return
        cap = max(need, int(cap * GROWTH) + 16)
        for name in ("codes", "hists", "keys", "alive"):
            old = getattr(self, name)
            new = np.zeros((cap,) + old.shape[1:], old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def trim(self) -> None:
        """Release spare capacity (after bulk loads and on compaction)."""
        for name in ("codes", "hists", "keys", "alive"):
            setattr(self, name, np.ascontiguousarray(getattr(self, name)[: self.n]))

    def compacted(self) -> "Block":
        """A dense copy without dead rows, rows grouped by their low-cardinality tokens.

        Rows are sorted by field, the fields with fewest values in this block first
        (say gender, then season), so those fields' postings become a few long runs
        and `run_optimize` keeps each posting in its smallest container form. Row order
        is invisible to searches: ties break by id, never by row.
        """
        rows = self.alive_rows()
        rows = rows[self._grouping_order(rows)]
        nb = Block(self.name, self.codes.shape[1], self.hists.shape[1])
        nb.codes, nb.hists, nb.keys = self.codes[rows], self.hists[rows], self.keys[rows]
        nb.alive = np.ones(len(rows), np.uint8)
        nb.n = nb.n_alive = len(rows)
        new_row = np.full(self.n, -1, np.int64)
        new_row[rows] = np.arange(len(rows))
        for t, bm in self.postings.items():
            moved = BitMap(np.sort(new_row[np.frombuffer(bm.to_array(), np.uint32)]).astype(np.uint32))
            moved.run_optimize()
            moved.shrink_to_fit()
            nb.postings[t] = moved
        nb.str_ids = {int(new_row[r]): s for r, s in self.str_ids.items()}
        nb.meta = {int(new_row[r]): m for r, m in self.meta.items()}
        return nb

    def _grouping_order(self, rows: np.ndarray) -> np.ndarray:
        """A stable order of `rows`: by the value of each field, fewest-valued fields first."""
        fields: dict[str, list[BitMap]] = {}
        for t, bm in self.postings.items():
            fields.setdefault(token_field(t), []).append(bm)
        columns = []
        for _, bms in sorted(fields.items(), key=lambda kv: (len(kv[1]), kv[0])):
            col = np.full(self.n, len(bms), np.int32)  # len(bms): the row has no value here
            for i, bm in enumerate(sorted(bms, key=len, reverse=True)):
                col[np.frombuffer(bm.to_array(), np.uint32)] = i
            columns.append(col[rows])
        if not columns:
            return np.arange(len(rows))
        return np.lexsort(columns[::-1])  # lexsort's last key is the primary one

    def append(self, codes, hists, keys, tokens, str_ids, metas) -> np.ndarray:
        """Append m rows; tokens[i] is the i-th row's non-partition tokens. Returns local rows."""
        m = len(keys)
        self._reserve(m)
        lo = self.n
        rows = np.arange(lo, lo + m, dtype=np.int64)
        self.codes[lo: lo + m] = codes
        self.hists[lo: lo + m] = hists
        self.keys[lo: lo + m] = keys
        self.alive[lo: lo + m] = 1
        self.n += m
        self.n_alive += m
        by_token: dict[str, list[int]] = {}
        for row, toks in zip(range(lo, lo + m), tokens):
            for t in toks:
                by_token.setdefault(t, []).append(row)
        for t, rs in by_token.items():
            bm = self.postings.get(t)
            if bm is None:
                # one string object per token for all blocks: a caller's string kept as a
                # key for good would pin the small-object arena it was allocated in
                self.postings[sys.intern(t)] = BitMap(rs)
            else:
                bm.update(rs)
        for i, sid in enumerate(str_ids):
            if sid is not None:
                self.str_ids[lo + i] = sid
        for i, meta in enumerate(metas):
            if meta:
                self.meta[lo + i] = meta
        return rows

    def delete(self, row: int) -> None:
        if not self.alive[row]:
            return
        self.alive[row] = 0
        self.n_alive -= 1
        empty = []
        for t, bm in self.postings.items():
            if row in bm:
                bm.discard(row)
                if not bm:
                    empty.append(t)
        for t in empty:
            del self.postings[t]
        self.str_ids.pop(row, None)
        self.meta.pop(row, None)

    def tokens_of(self, row: int) -> list[str]:
        toks = [t for t, bm in self.postings.items() if row in bm]
        if self.name:
            toks.append(self.name)
        return sorted(toks)

    def item_id(self, row: int):
        sid = self.str_ids.get(row)
        return sid if sid is not None else int(self.keys[row])

    def alive_rows(self) -> np.ndarray:
        return np.flatnonzero(self.alive[: self.n])

    def nbytes(self) -> int:
        arrays = sum(getattr(self, a).nbytes for a in ("codes", "hists", "keys", "alive"))
        return arrays + sum(bm.get_statistics()["n_bytes_array_containers"]
                            + bm.get_statistics()["n_bytes_bitset_containers"]
                            + bm.get_statistics()["n_bytes_run_containers"]
                            for bm in self.postings.values())
