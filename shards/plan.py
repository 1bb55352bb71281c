"""A batch's scan, planned in Python and run in one call of the C kernel.

The shard groups a batch's queries by constraint set; each group adds one task per
block that can hold a match (its candidate rows, or the whole block), and the plan
runs every task in one `kernels.scan_batch` call, so the fixed cost of a kernel call
is paid once per batch, not once per constraint set.
"""
from __future__ import annotations

import numpy as np

from . import kernels
from .block import Block
from .query import PreparedQuery


class QueryArrays:
    """A batch's query codes, histograms, weights and k stacked once, for the batch's one scan."""

    def __init__(self, qs: list[PreparedQuery]):
        if len(qs) == 1:  # a lone query (the latency path): views, no copies
            self.codes, self.hists = qs[0].code[None, :], qs[0].qhist[None, :]
        else:
            self.codes = np.stack([q.code for q in qs])
            self.hists = np.stack([q.qhist for q in qs])
        self.w_h = np.array([q.w_hamming for q in qs])
        self.w_c = np.array([q.w_colour for q in qs])
        self.w_o = np.array([q.w_optional for q in qs])
        self.k = np.array([q.k for q in qs], np.int64)


class ScanPlan:
    """A batch's scan as one table of tasks (kernels.scan_batch), gathered constraint set by set.

    Tasks accumulate until `run()`, which scans them into the batch's heaps. Tasks
    with optional tokens carry a (members x block rows) bonus matrix; once those pass
    `bonus_budget` bytes the pending tasks run early, so a batch of unfiltered
    queries over a big shard never holds every block's matrix at once.
    """

    bonus_budget = 64 << 20

    def __init__(self, blocks: list[Block], batch: QueryArrays, inv_bits: float, heaps):
        self.blocks, self.batch, self.inv_bits, self.heaps = blocks, batch, inv_bits, heaps
        self.members: list[int] = []   # kept across runs: tasks refer to slices of it
        self._clear()

    def _clear(self) -> None:
        self.tasks: list[tuple] = []
        self.rows: list[np.ndarray] = []
        self.bonuses: list = []
        self.n_rows = self.bonus_bytes = 0

    def add_members(self, members: list[int]) -> tuple[int, int]:
        lo = len(self.members)
        self.members.extend(members)
        return lo, len(self.members)

    def add_task(self, bid: int, block: Block, cand, mlo: int, mhi: int, bonus) -> int:
        """Scan `cand` (a BitMap of rows, or None: every alive row) of block `bid`; returns its size."""
        n = block.n
        if cand is None:
            self.tasks.append((bid, n, 0, n, 0, int(block.n_alive < n), mlo, mhi))
            size = block.n_alive
        else:
            rows = np.frombuffer(cand.to_array(), np.uint32)
            self.tasks.append((bid, n, self.n_rows, self.n_rows + len(rows), 1, 0, mlo, mhi))
            self.rows.append(rows)
            self.n_rows += len(rows)
            size = len(rows)
        self.bonuses.append(bonus)
        if bonus is not None:
            self.bonus_bytes += bonus.nbytes
            if self.bonus_bytes > self.bonus_budget:
                self.run()
        return size

    def run(self) -> None:
        """Scan the pending tasks into the heaps (a heap carries over from one run to the next)."""
        if not self.tasks:
            return
        arrays: list = [None] * len(self.blocks)
        for t in self.tasks:
            b = self.blocks[t[0]]
            arrays[t[0]] = (b.codes, b.keys, b.alive, b.hists)
        rows = np.concatenate(self.rows) if self.rows else kernels.NO_ROWS
        b = self.batch
        kernels.scan_batch(arrays, np.asarray(self.tasks, np.int64), rows, np.asarray(self.members, np.int64),
                           self.bonuses, b.codes, b.hists, b.w_h, b.w_c, b.w_o, b.k, self.inv_bits, self.heaps)
        self._clear()
