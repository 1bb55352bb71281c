"""A block: the rows of one partition (one fashion-category) laid out contiguously.

The paper's search first restricts to the query's category, so a shard keeps one
block per value of its partition field (e.g. articleType). A category-filtered
scan then reads one dense run of codes, and the other attributes' postings are
bitmaps over that block's local rows. Rows are append-only; a delete clears the
row's alive flag and removes it from the postings; compaction (in shard.py)
rewrites blocks densely.
"""
from __future__ import annotations

import numpy as np
from pyroaring import BitMap

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
                self.postings[t] = BitMap(rs)
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
