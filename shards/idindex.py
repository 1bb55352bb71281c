"""External id key -> location (block << 32 | row), in dense arrays.

A Python dict per item would cost ~100 bytes; here the bulk lives in two sorted
numpy arrays (16 bytes an item) and recent changes in a small dict that is merged
in when it grows (an LSM of two levels). A location of -1 in the dict marks a
key deleted since the last merge.
"""
from __future__ import annotations

import numpy as np

MISSING = -1


class IdIndex:
    def __init__(self, keys: np.ndarray | None = None, locs: np.ndarray | None = None):
        keys = np.zeros(0, np.uint64) if keys is None else np.asarray(keys, np.uint64)
        locs = np.zeros(0, np.int64) if locs is None else np.asarray(locs, np.int64)
        order = np.argsort(keys, kind="stable")
        self.skeys, self.slocs = keys[order], locs[order]
        if len(self.skeys) > 1 and (self.skeys[1:] == self.skeys[:-1]).any():
            raise ValueError("IdIndex: duplicate keys")
        self.delta: dict[int, int] = {}
        self.n = len(self.skeys)

    def __len__(self) -> int:
        return self.n

    def _base_get(self, keys: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.skeys, keys)
        pos_c = np.minimum(pos, max(len(self.skeys) - 1, 0))
        if len(self.skeys) == 0:
            return np.full(len(keys), MISSING, np.int64)
        hit = self.skeys[pos_c] == keys
        return np.where(hit, self.slocs[pos_c], MISSING)

    def get_many(self, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, np.uint64)
        locs = self._base_get(keys)
        if self.delta:
            d = self.delta
            for i, key in enumerate(keys.tolist()):
                v = d.get(key)
                if v is not None:
                    locs[i] = v
        return locs

    def get(self, key: int) -> int:
        return int(self.get_many(np.array([key], np.uint64))[0])

    def set_many(self, keys: np.ndarray, locs: np.ndarray, old: np.ndarray) -> None:
        """Point keys at locs; `old` is what get_many returned for them just before."""
        self.delta.update(zip(np.asarray(keys, np.uint64).tolist(), np.asarray(locs, np.int64).tolist()))
        self.n += int((np.asarray(old) == MISSING).sum())
        self._maybe_merge()

    def remove_many(self, keys: np.ndarray, old: np.ndarray) -> None:
        present = np.asarray(old) != MISSING
        self.delta.update((k, MISSING) for k in np.asarray(keys, np.uint64)[present].tolist())
        self.n -= int(present.sum())
        self._maybe_merge()

    def _maybe_merge(self) -> None:
        if len(self.delta) > max(65536, len(self.skeys) // 4):
            self.merge()

    def merge(self) -> None:
        if not self.delta:
            return
        dk = np.fromiter(self.delta.keys(), np.uint64, len(self.delta))
        dl = np.fromiter(self.delta.values(), np.int64, len(self.delta))
        keep = ~np.isin(self.skeys, dk)
        live = dl != MISSING
        keys = np.concatenate([self.skeys[keep], dk[live]])
        locs = np.concatenate([self.slocs[keep], dl[live]])
        order = np.argsort(keys, kind="stable")
        self.skeys, self.slocs = keys[order], locs[order]
        self.delta = {}
        self.n = len(self.skeys)

    def nbytes(self) -> int:
        return self.skeys.nbytes + self.slocs.nbytes + 100 * len(self.delta)
