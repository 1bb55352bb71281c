"""Durability: reopen, compaction, a SIGKILL'd writer, and damaged files."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from shards.errors import CorruptData, StorageError, StorageFull
from shards.oracle import brute_force_search
from shards.shard import Shard, ShardConfig

from .helpers import FullDisk, as_tuples, model_add, random_items, random_query

CFG = ShardConfig(bits=128, hist_bins=8)


def fill(path, rng, n=200, batches=3):
    shard = Shard(path, CFG)
    model = {}
    for b in range(batches):
        ids, codes, hists, attrs = random_items(rng, n, 2, 8, start=b * n)
        shard.upsert(ids, codes, hists, attrs, [{"title": f"item {i}"} for i in ids])
        model_add(model, ids, codes, hists, attrs, 8)
    gone = list(range(0, n * batches, 5))
    shard.delete(gone)
    for i in gone:
        model.pop(i, None)
    return shard, model


def assert_same(shard, model, rng, n=10):
    assert len(shard) == len(model)
    assert sorted(shard.ids(), key=str) == sorted(model, key=str)
    for _ in range(n):
        pq = shard.prepare(random_query(rng, 2, 8))
        want, level, _ = brute_force_search(model, pq)
        assert as_tuples(shard.search(pq)) == want


def test_reopen_replays_log_and_compaction_keeps_everything(tmp_path):
    rng = np.random.default_rng(0)
    shard, model = fill(tmp_path / "s", rng)
    shard.close()
    shard = Shard(tmp_path / "s")
    assert shard.warnings == []
    assert_same(shard, model, rng)
    assert shard.get(1)["meta"] == {"title": "item 1"}
    shard.compact()
    ids, codes, hists, attrs = random_items(rng, 50, 2, 8, start=10_000)
    shard.upsert(ids, codes, hists, attrs)
    model_add(model, ids, codes, hists, attrs, 8)
    shard.close()
    shard = Shard(tmp_path / "s")
    assert_same(shard, model, rng)


WRITER = r"""
import sys, numpy as np
from shards.shard import Shard, ShardConfig
shard = Shard(sys.argv[1], ShardConfig(bits=128, hist_bins=8))
rng = np.random.default_rng(0)
i = 0
while True:
    ids = list(range(i, i + 7))
    shard.upsert(ids, rng.integers(0, 2**63, (7, 2), dtype=np.uint64), np.ones((7, 8)),
                 [["articleType=a", f"n={j % 3}"] for j in ids])
    print(ids[-1], flush=True)   # acknowledged
    i += 7
    if i % 70 == 0:
        shard.compact()
"""


def test_sigkill_loses_no_acknowledged_upsert(tmp_path):
    path = tmp_path / "crash"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    acked = -1
    deadline = time.time() + 60
    while acked < 600 and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the writer runs ahead of this reader: what it printed before the kill was acknowledged too
    for line in proc.stdout:
        acked = int(line)
    assert acked >= 600, "the writer did not get far enough"
    shard = Shard(path)
    ids = set(shard.ids())
    assert set(range(acked + 1)) <= ids            # every acknowledged upsert is there
    assert ids <= set(range(acked + 1 + 7))         # and at most the one batch in flight besides
    assert max(ids) + 1 in (acked + 1, acked + 8)   # batches are all or nothing


def test_torn_tail_is_cut_and_reported(tmp_path):
    rng = np.random.default_rng(1)
    shard, model = fill(tmp_path / "s", rng)
    shard.close()
    seg = sorted((tmp_path / "s").glob("wal-*.log"))[-1]
    with open(seg, "ab") as f:
        f.write(b"\x10\x00\x00\x00garbage")     # a frame header cut short by a crash
    shard = Shard(tmp_path / "s")
    assert any("torn" in w for w in shard.warnings)
    assert_same(shard, model, rng)


def test_flipped_byte_in_log_is_reported_never_silently_wrong(tmp_path):
    rng = np.random.default_rng(2)
    shard, model = fill(tmp_path / "s", rng, batches=3)
    shard.close()
    seg = sorted((tmp_path / "s").glob("wal-*.log"))[-1]
    data = bytearray(seg.read_bytes())
    data[200] ^= 0x40                              # inside the first upsert record
    seg.write_bytes(bytes(data))
    shard = Shard(tmp_path / "s")
    assert any("CRC" in w for w in shard.warnings)
    assert list((tmp_path / "s").glob("*.damaged")), "the damaged log is kept for forensics"
    # the damaged record's items are missing, and nothing else is wrong
    lost = set(model) - set(shard.ids())
    assert lost and lost <= set(range(200))
    for i in shard.ids():
        code, qh, toks = model[i]
        got = shard.get(i)
        assert (got["code"] == code).all() and set(got["attributes"]) == toks


def files_of(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


@pytest.mark.parametrize("damage", ["torn tail", "flipped byte"])
def test_a_read_only_open_reads_what_a_normal_open_recovers_and_changes_no_file(tmp_path, damage):
    rng = np.random.default_rng(4)
    shard, model = fill(tmp_path / "s", rng)
    shard.close()
    seg = sorted((tmp_path / "s").glob("wal-*.log"))[-1]
    if damage == "torn tail":
        with open(seg, "ab") as f:
            f.write(b"\x10\x00\x00\x00garbage")
    else:
        data = bytearray(seg.read_bytes())
        data[200] ^= 0x40
        seg.write_bytes(bytes(data))
    before = files_of(tmp_path / "s")
    ro = Shard(tmp_path / "s", read_only=True)
    assert files_of(tmp_path / "s") == before
    assert ro.damaged == (damage == "flipped byte") and ro.warnings
    with pytest.raises(StorageError, match="read-only"):
        ro.upsert(*random_items(rng, 1, 2, 8, start=10_000))
    with pytest.raises(StorageError, match="read-only"):
        ro.delete([1])
    with pytest.raises(StorageError, match="read-only"):
        ro.compact()
    assert files_of(tmp_path / "s") == before
    rw = Shard(tmp_path / "s")       # the normal open, which repairs: the same items, the same answers
    assert rw.damaged == ro.damaged
    assert sorted(ro.ids(), key=str) == sorted(rw.ids(), key=str)
    for _ in range(10):
        pq = rw.prepare(random_query(rng, 2, 8))
        assert as_tuples(ro.search(pq)) == as_tuples(rw.search(pq))
    if damage == "torn tail":
        assert_same(ro, model, rng)


def test_a_read_only_open_creates_nothing(tmp_path):
    with pytest.raises(StorageError, match="no shard"):
        Shard(tmp_path / "none", CFG, read_only=True)
    assert not (tmp_path / "none").exists()


def test_truncated_snapshot_falls_back_to_the_older_one(tmp_path):
    rng = np.random.default_rng(3)
    shard, model = fill(tmp_path / "s", rng)
    shard.compact()
    ids, codes, hists, attrs = random_items(rng, 30, 2, 8, start=5000)
    shard.upsert(ids, codes, hists, attrs)
    model_add(model, ids, codes, hists, attrs, 8)
    shard.compact()
    shard.close()
    newest = sorted((tmp_path / "s").glob("snapshot-*.msgpack"))[-1]
    newest.write_bytes(newest.read_bytes()[:100])
    shard = Shard(tmp_path / "s")
    assert any("checksum" in w or "truncated" in w for w in shard.warnings)
    assert_same(shard, model, rng)


def test_all_snapshots_damaged_and_log_pruned_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(4)
    shard, _ = fill(tmp_path / "s", rng)
    for _ in range(3):
        shard.compact()
        shard.upsert([99999], np.zeros((1, 2), np.uint64), np.ones((1, 8)), [["a=b"]])
    shard.close()
    for p in (tmp_path / "s").glob("snapshot-*.msgpack"):
        p.write_bytes(b"FSSNAP1\nxx")
    with pytest.raises(CorruptData):
        Shard(tmp_path / "s")


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(StorageError, match="no shard"):
        Shard(tmp_path / "nowhere", create=False)


def test_a_snapshot_from_a_newer_version_is_refused_and_nothing_changes(tmp_path):
    """Not taken for damage: falling back to an older snapshot could open with items missing."""
    from shards.snapshot import read_snapshot, write_snapshot
    rng = np.random.default_rng(5)
    shard, model = fill(tmp_path / "s", rng)
    shard.compact()
    shard.close()
    newest = sorted((tmp_path / "s").glob("snapshot-*.msgpack"))[-1]
    doc = read_snapshot(newest)
    doc["format"] = 2
    write_snapshot(tmp_path / "s", int(newest.stem.split("-")[1]), doc)
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()}
    with pytest.raises(StorageError, match="format 2, written by a newer fashion-search") as err:
        Shard(tmp_path / "s")
    assert not isinstance(err.value, CorruptData)
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()} == before
    # the format this version writes opens as before
    doc["format"] = 1
    write_snapshot(tmp_path / "s", int(newest.stem.split("-")[1]), doc)
    assert_same(Shard(tmp_path / "s"), model, rng)


def test_a_write_the_full_disk_refuses_is_storage_full_and_changes_nothing(tmp_path, monkeypatch):
    """The log cannot take the record (ENOSPC at its fsync): StorageFull (REST 507), nothing applied,
    the log cut back; with space again the same write goes through, and a restart finds it."""
    import shards.wal
    rng = np.random.default_rng(9)
    shard, model = fill(tmp_path / "s", rng)
    ids, codes, hists, attrs = random_items(rng, 30, 2, 8, start=8000)
    monkeypatch.setattr(shards.wal, "os", FullDisk())
    with pytest.raises(StorageFull, match="write-ahead log append failed: .*No space left on device"):
        shard.upsert(ids, codes, hists, attrs)
    with pytest.raises(StorageFull):
        shard.delete(list(model)[:5])
    assert_same(shard, model, rng)
    monkeypatch.setattr(shards.wal, "os", os)
    shard.upsert(ids, codes, hists, attrs)
    model_add(model, ids, codes, hists, attrs, 8)
    shard.close()
    assert_same(Shard(tmp_path / "s"), model, rng)


def test_a_full_disk_at_compaction_fails_no_write_and_leaves_no_half_file(tmp_path, monkeypatch):
    """The snapshot cannot be written (ENOSPC): writes go on into the log, and once space is
    back a compaction succeeds; nothing acknowledged is lost on the way."""
    import shards.snapshot
    rng = np.random.default_rng(6)
    shard, model = fill(tmp_path / "s", rng)

    monkeypatch.setattr(shards.snapshot, "os", FullDisk())
    with pytest.raises(StorageError, match="cannot write snapshot .*No space left on device"):
        shard.compact()
    assert not list((tmp_path / "s").glob("*.tmp"))                   # the half-written snapshot is gone
    ids, codes, hists, attrs = random_items(rng, 40, 2, 8, start=7000)
    shard.upsert(ids, codes, hists, attrs)                            # the log is still open
    model_add(model, ids, codes, hists, attrs, 8)
    assert shard.maybe_compact(0) is False                            # after a write: kept, not raised
    assert "No space left" in shard.stats()["compaction_error"]
    shard.delete([7000])
    model.pop(7000)
    assert_same(Shard(tmp_path / "s"), model, rng)                    # a restart now finds it all
    monkeypatch.setattr(shards.snapshot, "os", os)                    # space again
    assert shard.maybe_compact(0) is True and shard.stats()["compaction_error"] is None
    shard.close()
    assert_same(Shard(tmp_path / "s"), model, rng)


def test_a_new_log_segment_that_cannot_be_opened_is_opened_by_the_next_write(tmp_path, monkeypatch):
    """The snapshot was written, then creating the next segment failed (a full disk, no
    file descriptors left): the next write opens it and is durable like any other."""
    import shards.shard
    rng = np.random.default_rng(7)
    shard, model = fill(tmp_path / "s", rng)
    real = shards.shard.WalWriter

    def cannot_open(path, fsync=True):
        raise StorageError(f"cannot open write-ahead log {path}: No space left on device")
    monkeypatch.setattr(shards.shard, "WalWriter", cannot_open)
    assert shard.maybe_compact(0) is False and "cannot open" in shard.stats()["compaction_error"]
    monkeypatch.setattr(shards.shard, "WalWriter", real)
    ids, codes, hists, attrs = random_items(rng, 25, 2, 8, start=8000)
    shard.upsert(ids, codes, hists, attrs)
    model_add(model, ids, codes, hists, attrs, 8)
    assert_same(Shard(tmp_path / "s"), model, rng)       # found after a restart: it reached the log
    shard.close()
    with pytest.raises(StorageError, match="is closed"):  # a closed shard never acknowledges a write
        shard.upsert([9999], codes[:1], hists[:1], attrs[:1])
    assert 9999 not in shard.ids()
