"""Where each item lives: ids hash to virtual buckets, a versioned map puts buckets on shards.

The map is durable (`placement.json` in the storage root, replaced atomically) and
carries the state of a rebalance in progress:

- owner[b]: the shard that answers for bucket b;
- moving[b] = dst: b is being copied to dst; writes go to owner and dst, and
  dst hides b from queries;
- draining[b] = src: b now belongs to owner, and src still holds a stale copy
  (hidden from queries) until it is deleted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shards.codes import bucket_of_keys, id_keys
from shards.errors import CorruptData, InvalidInput
from shards.files import write_atomically

N_BUCKETS = 4096
FILE = "placement.json"


def shard_name(i: int) -> str:
    return f"shard-{i:03d}"


def check_shard_count(n_shards, n_buckets: int) -> None:
    """A cluster has 1 to n_buckets shards (a shard owns at least one bucket)."""
    if not isinstance(n_shards, int) or isinstance(n_shards, bool) or not 1 <= n_shards <= n_buckets:
        raise InvalidInput(f"number of shards must be in [1, {n_buckets}], got {n_shards!r}")


@dataclass
class Placement:
    shards: list[str]
    owner: list[str]                      # bucket -> shard
    version: int = 1
    n_buckets: int = N_BUCKETS
    moving: dict[int, str] = field(default_factory=dict)
    draining: dict[int, str] = field(default_factory=dict)

    @classmethod
    def initial(cls, n_shards: int, n_buckets: int = N_BUCKETS) -> "Placement":
        check_shard_count(n_shards, n_buckets)
        shards = [shard_name(i) for i in range(n_shards)]
        return cls(shards=shards, owner=[shards[b % n_shards] for b in range(n_buckets)],
                   n_buckets=n_buckets)

    # ------------------------------------------------------------ routing
    def buckets_of(self, ids) -> np.ndarray:
        return bucket_of_keys(id_keys(ids), self.n_buckets)

    def write_targets(self, bucket: int) -> list[str]:
        """Shards a write to `bucket` must reach before it is acknowledged."""
        dst = self.moving.get(bucket)
        return [self.owner[bucket]] + ([dst] if dst else [])

    def exclusions(self) -> dict[str, list[int]]:
        """Per shard, the buckets it holds but must not answer for."""
        out: dict[str, list[int]] = {}
        for b, dst in self.moving.items():
            out.setdefault(dst, []).append(b)
        for b, src in self.draining.items():
            out.setdefault(src, []).append(b)
        return out

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in self.shards}
        for s in self.owner:
            out[s] += 1
        return out

    # ------------------------------------------------------------ planning
    def plan(self, n_shards: int) -> tuple[list[str], list[tuple[int, str, str]]]:
        """Shards after resizing to n_shards, and the (bucket, src, dst) moves to get there.

        Balanced (bucket counts differ by at most one) with the fewest moves: a shard
        keeps its buckets up to its quota; the excess, and every bucket of a removed
        shard, goes to the shards under quota.
        """
        check_shard_count(n_shards, self.n_buckets)
        existing = {int(s.split("-")[1]) for s in self.shards}
        new_shards = sorted(self.shards)[:n_shards]
        i = 0
        while len(new_shards) < n_shards:
            while i in existing:
                i += 1
            new_shards.append(shard_name(i))
            i += 1
        quota = {s: self.n_buckets // n_shards + (r < self.n_buckets % n_shards)
                 for r, s in enumerate(new_shards)}
        held = {s: 0 for s in new_shards}
        free = []
        for b, s in enumerate(self.owner):
            if s in held and held[s] < quota[s]:
                held[s] += 1
            else:
                free.append(b)
        moves = []
        under = [s for s in new_shards for _ in range(quota[s] - held[s])]
        for b, dst in zip(free, under):
            moves.append((b, self.owner[b], dst))
        return new_shards, moves

    # ------------------------------------------------------------ persistence
    def to_json(self) -> dict:
        return {"version": self.version, "n_buckets": self.n_buckets, "shards": self.shards,
                "owner": self.owner, "moving": {str(b): s for b, s in self.moving.items()},
                "draining": {str(b): s for b, s in self.draining.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "Placement":
        p = cls(shards=list(d["shards"]), owner=list(d["owner"]), version=int(d["version"]),
                n_buckets=int(d["n_buckets"]),
                moving={int(b): s for b, s in d.get("moving", {}).items()},
                draining={int(b): s for b, s in d.get("draining", {}).items()})
        if len(p.owner) != p.n_buckets or not set(p.owner) <= set(p.shards):
            raise CorruptData("placement map: owners do not match its shard list")
        return p

    def save(self, root: Path) -> None:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        write_atomically(root / FILE, json.dumps(self.to_json()))

    @classmethod
    def load(cls, root: Path) -> "Placement | None":
        path = Path(root) / FILE
        if not path.exists():
            return None
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptData(f"{path}: unreadable placement map: {exc}") from exc
