"""External id key -> location (block << 32 | row), at 4 bytes an item.

The base level shares the blocks' own key arrays: it concatenates them once and
points every block's `keys` at its slice, then keeps only `order`, the uint32
positions of the alive rows sorted by key (binary search in `_scan.lookup`).
A sorted copy of the keys plus their locations would cost 16 bytes an item.

Changes since the base was built sit in a few sorted numpy runs (an LSM whose
runs merge like a binary counter), newest last; a location of -1 in a run marks
a key deleted since. No Python object per item: small objects that outlive a
write batch would pin the allocator's arenas and keep freed memory resident.
When the runs grow past a quarter of the base, `wants_rebuild()` tells the
shard to build a new index from its blocks.
"""
from __future__ import annotations

import numpy as np

from ._scan import lookup as _lookup

MISSING = -1
MIN_REBUILD = 65536

_NO_KEYS = np.zeros(0, np.uint64)
_NO_LOCS = np.zeros(0, np.int64)


def _newest_per_key(keys: np.ndarray, locs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort by key; where a key repeats, keep its last (newest) entry."""
    order = np.argsort(keys, kind="stable")
    keys, locs = keys[order], locs[order]
    last = np.ones(len(keys), bool)
    last[:-1] = keys[1:] != keys[:-1]
    return keys[last], locs[last]


class IdIndex:
    def __init__(self, blocks=()):
        """Index the alive rows of `blocks`; each block's `keys` becomes a view of the base."""
        caps = [len(b.keys) for b in blocks]
        self.starts = np.zeros(len(caps) + 1, np.int64)
        np.cumsum(caps, out=self.starts[1:])
        self.base = np.concatenate([b.keys for b in blocks]) if blocks else _NO_KEYS
        if len(self.base) >= 2**32:
            raise ValueError("IdIndex: a shard holds at most 2**32 rows")
        alive = []
        for b, lo, cap in zip(blocks, self.starts.tolist(), caps):
            b.keys = self.base[lo: lo + cap]
            alive.append(lo + b.alive_rows())
        pos = np.concatenate(alive) if alive else _NO_LOCS
        pos = pos[np.argsort(self.base[pos], kind="stable")]
        sorted_keys = self.base[pos]
        if len(pos) > 1 and (sorted_keys[1:] == sorted_keys[:-1]).any():
            raise ValueError("IdIndex: duplicate keys")
        self.order = pos.astype(np.uint32)
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []
        self.n = len(self.order)

    def __len__(self) -> int:
        return self.n

    def get_many(self, keys) -> np.ndarray:
        keys = np.ascontiguousarray(keys, np.uint64)
        pos = np.empty(len(keys), np.int64)
        _lookup(self.base, self.order, keys, pos)
        hit = pos != MISSING
        bid = np.searchsorted(self.starts, pos[hit], side="right") - 1
        locs = np.full(len(keys), MISSING, np.int64)
        locs[hit] = (bid << 32) | (pos[hit] - self.starts[bid])
        for rkeys, rlocs in self.runs:  # oldest first, so newer runs overwrite
            p = np.minimum(np.searchsorted(rkeys, keys), len(rkeys) - 1)
            found = rkeys[p] == keys
            locs[found] = rlocs[p[found]]
        return locs

    def get(self, key: int) -> int:
        return int(self.get_many(np.array([key], np.uint64))[0])

    def set_many(self, keys, locs, old) -> None:
        """Point keys at locs; `old` is what get_many returned for them just before."""
        self._push(np.asarray(keys, np.uint64), np.asarray(locs, np.int64))
        self.n += int((np.asarray(old) == MISSING).sum())

    def remove_many(self, keys, old) -> None:
        present = np.asarray(old) != MISSING
        gone = np.asarray(keys, np.uint64)[present]
        self._push(gone, np.full(len(gone), MISSING, np.int64))
        self.n -= int(present.sum())

    def _push(self, keys: np.ndarray, locs: np.ndarray) -> None:
        if len(keys) == 0:
            return
        self.runs.append(_newest_per_key(keys, locs))
        # merge while the older neighbour is not much bigger: O(log n) runs
        while len(self.runs) >= 2 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            (k1, l1), (k2, l2) = self.runs[-2:]
            self.runs[-2:] = [_newest_per_key(np.concatenate([k1, k2]), np.concatenate([l1, l2]))]

    def pending(self) -> int:
        return sum(len(k) for k, _ in self.runs)

    def wants_rebuild(self) -> bool:
        return self.pending() > max(MIN_REBUILD, len(self.order) // 4)

    def nbytes(self, blocks=()) -> int:
        """Bytes held beyond the blocks' own arrays (the base counts where no block shares it)."""
        shared = sum(b.keys.nbytes for b in blocks if b.keys.base is self.base)
        return (self.base.nbytes - shared + self.order.nbytes + self.starts.nbytes
                + sum(k.nbytes + v.nbytes for k, v in self.runs))
