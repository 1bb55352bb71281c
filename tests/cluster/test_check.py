"""`fashion-search check` (cluster/check.py): a storage root's damage, items in the wrong shard,
a backup's count and missing photos are reported, and the check changes no file. Roots are
made by the coordinator over real shards on disk, without Ray; a real cluster's backup is
checked in test_backup.py."""
import asyncio
import json
import os
import time

import numpy as np
import pytest

from cluster.backup import ABOUT
from cluster.check import check_root
from cluster.cli import main
from cluster.uploads import new_upload
from coordinator.placement import Placement
from shards.shard import Shard

from ..coordinator.test_coordinator import make
from ..shards.helpers import random_items


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def a_root(tmp_path, n=300, photos=0):
    """A 3-shard root of `n` items, the first `photos` of them with an uploaded photo on disk."""
    root = tmp_path / "root"
    root.mkdir()
    coord = make(root)
    coord.placement.save(root)    # as cluster/runtime.py does when it makes a root
    ids, codes, hists, attrs = random_items(np.random.default_rng(0), n, 2, 8, str_ids=True)
    metas = [{"image": new_upload()} if i < photos else {"title": f"item {i}"} for i in range(n)]
    (root / "uploads").mkdir()
    for m in metas[:photos]:
        (root / m["image"]).write_bytes(b"jpeg")
    asyncio.run(coord.upsert(ids, codes, hists, attrs, metas))
    for client in coord.clients.values():
        client.shard.close()
    return root, ids, metas


def held_per_shard(root, ids):
    """The oracle: where the placement map puts each id."""
    placement = Placement.load(root)
    want = {s: 0 for s in placement.shards}
    for b in placement.buckets_of(ids).tolist():
        want[placement.owner[b]] += 1
    return want


def test_a_whole_root_is_ok_counts_every_shard_and_changes_no_file(tmp_path):
    root, ids, _ = a_root(tmp_path, photos=5)
    before = tree(root)
    report = check_root(root)
    assert tree(root) == before
    assert report["ok"] and not report["problems"]
    assert report["items"] == report["held"] == len(ids)
    assert {s: r["items"] for s, r in report["shards"].items()} == held_per_shard(root, ids)
    assert all(r["stray"] == 0 and not r["damaged"] for r in report["shards"].values())
    assert report["uploaded_photos"] == {"recorded": 5, "missing": 0, "missing_examples": []}
    assert report["backup"] is None and report["rebalance"] == {"moving": 0, "draining": 0}


def test_the_models_that_coded_the_catalog_are_compared_with_the_ones_here(tmp_path):
    from cluster.model_record import RECORD, check_models, features_digest
    from models.data import ASSETS
    root, _, _ = a_root(tmp_path)
    assert any(f"no readable {RECORD}" in w for w in check_root(root)["warnings"])
    check_models(root)                                  # as the first command that codes photos records them
    report = check_root(root)
    assert report["models"] == {"recorded": features_digest(ASSETS), "here": features_digest(ASSETS)}
    assert not any("feature model" in w or RECORD in w for w in report["warnings"])
    record = json.loads((root / RECORD).read_text())
    (root / RECORD).write_text(json.dumps({**record, "features": "0123456789abcdef"}))
    report = check_root(root)
    assert report["ok"] and any("0123456789abcdef" in w and "refused" in w for w in report["warnings"])


def test_a_missing_uploaded_photo_is_a_warning_not_a_problem(tmp_path):
    root, _, metas = a_root(tmp_path, photos=4)
    (root / metas[2]["image"]).unlink()
    report = check_root(root)
    assert report["ok"]
    assert report["uploaded_photos"]["missing"] == 1 and report["uploaded_photos"]["missing_examples"] == [
        metas[2]["image"]]
    assert any("uploaded photo" in w for w in report["warnings"])


def test_an_item_in_a_bucket_another_shard_owns_is_a_problem(tmp_path):
    root, ids, _ = a_root(tmp_path)
    placement = Placement.load(root)
    extra = "stray-1"
    owner = placement.owner[int(placement.buckets_of([extra])[0])]
    wrong = next(s for s in placement.shards if s != owner)
    shard = Shard(root / wrong)
    shard.upsert([extra], *random_items(np.random.default_rng(1), 1, 2, 8)[1:])
    shard.close()
    report = check_root(root)
    assert not report["ok"]
    assert report["shards"][wrong]["stray"] == 1 and report["shards"][owner]["stray"] == 0
    assert report["items"] == len(ids) and report["held"] == len(ids) + 1
    assert any(wrong in p and "other shards" in p for p in report["problems"])


def test_damage_found_by_a_shard_recovery_is_a_problem_and_is_left_for_the_shard_to_repair(tmp_path):
    root, _, _ = a_root(tmp_path)
    seg = sorted((root / "shard-001").glob("wal-*.log"))[-1]
    data = bytearray(seg.read_bytes())
    data[200] ^= 0x40
    seg.write_bytes(bytes(data))
    before = tree(root)
    report = check_root(root)
    assert tree(root) == before                       # no .damaged copy, no snapshot: read-only
    assert not report["ok"] and report["shards"]["shard-001"]["damaged"]
    assert any("shard-001" in p and "damage" in p for p in report["problems"])
    assert not report["shards"]["shard-000"]["damaged"]


def test_a_shard_that_cannot_be_read_is_a_problem(tmp_path):
    root, _, _ = a_root(tmp_path)
    (root / "shard-002" / "shard.json").write_text("{not json")
    report = check_root(root)
    assert not report["ok"] and "error" in report["shards"]["shard-002"]
    assert any("shard-002 cannot be read" in p for p in report["problems"])


def test_a_shard_that_folds_its_log_while_it_is_read_is_read_again(tmp_path, monkeypatch):
    """A live root: the shard takes a write and folds its log into a new snapshot just as the check
    reads it, and the read fails. Its files changed, so it is read again, with the new item."""
    import cluster.check
    root, ids, _ = a_root(tmp_path)
    placement = Placement.load(root)
    new = random_items(np.random.default_rng(1), 50, 2, 8, start=10_000, str_ids=True)
    mine = next(i for i, b in enumerate(placement.buckets_of(new[0]).tolist()) if placement.owner[b] == "shard-001")
    reads = []

    def live_shard(folder, **options):
        reads.append(folder.name)
        if reads.count("shard-001") == 1 and folder.name == "shard-001":
            writer = Shard(folder)
            writer.upsert(*[column[mine: mine + 1] for column in new])
            writer.compact()
            writer.close()
            raise FileNotFoundError(f"{folder}/snapshot: vanished while read")
        return Shard(folder, **options)
    monkeypatch.setattr(cluster.check, "Shard", live_shard)
    report = check_root(root)
    assert reads.count("shard-001") == 2 and report["ok"], report["problems"]
    assert report["items"] == report["held"] == len(ids) + 1
    # a shard that fails while nothing changes is not read again: the failure is the answer
    reads.clear()

    def bad_disk(folder, **options):
        reads.append(folder.name)
        if folder.name == "shard-002":
            raise OSError("bad disk")
        return Shard(folder, **options)
    monkeypatch.setattr(cluster.check, "Shard", bad_disk)
    report = check_root(root)
    assert reads.count("shard-002") == 1 and not report["ok"]
    assert any("shard-002 cannot be read: bad disk" in p for p in report["problems"])


def a_backup_record(root, items):
    """backup.json as the backup writes it: after every file it copied."""
    (root / ABOUT).write_text(json.dumps({"items": items, "unavailable": []}))
    later = time.time() + 60
    os.utime(root / ABOUT, (later, later))


def test_a_backup_is_checked_against_its_own_count(tmp_path):
    root, ids, _ = a_root(tmp_path)
    a_backup_record(root, len(ids))
    report = check_root(root)
    assert report["ok"] and report["backup"]["compared"]
    a_backup_record(root, len(ids) + 3)
    report = check_root(root)
    assert not report["ok"] and any(f"counts {len(ids) + 3} items" in p for p in report["problems"])
    (root / ABOUT).write_text("{cut sho")
    assert not check_root(root)["ok"]


def test_a_backup_served_from_is_not_held_to_its_count(tmp_path):
    """Restoring is serving from the backup: once it takes writes, backup.json's count is history."""
    root, ids, _ = a_root(tmp_path)
    a_backup_record(root, len(ids))
    earlier = time.time() - 60
    os.utime(root / ABOUT, (earlier, earlier))     # the shards' files are newer: it has been served since
    report = check_root(root)
    assert report["ok"] and report["backup"]["compared"] is False
    assert any("served since" in w for w in report["warnings"])


def test_a_rebalance_left_half_done_is_reported_not_a_problem(tmp_path):
    root, ids, _ = a_root(tmp_path)
    placement = Placement.load(root)
    bucket, src = next((b, s) for b, s in enumerate(placement.owner) if s == "shard-000")
    # the move's copy: bucket's items in shard-001 too, hidden there while it moves
    source = Shard(root / src)
    moved = source.export_buckets([bucket], placement.n_buckets)
    source.close()
    dst = Shard(root / "shard-001")
    dst.upsert(moved["ids"], moved["codes"], moved["hists"], moved["attributes"], moved["metas"], quantised=True)
    dst.close()
    placement.moving = {bucket: "shard-001"}
    placement.save(root)
    report = check_root(root)
    assert moved["ids"] and report["ok"]
    assert report["rebalance"] == {"moving": 1, "draining": 0}
    assert report["items"] == len(ids) and report["held"] == len(ids) + len(moved["ids"])
    assert any("rebalance" in w for w in report["warnings"])


def a_live_root(tmp_path, n=300):
    """A 3-shard root whose coordinator is still running (its shards open for writing)."""
    root = tmp_path / "root"
    root.mkdir()
    coord = make(root)
    coord.placement.save(root)
    ids, codes, hists, attrs = random_items(np.random.default_rng(0), n, 2, 8, str_ids=True)
    asyncio.run(coord.upsert(ids, codes, hists, attrs))
    return root, coord, ids


def test_a_rebalance_between_two_shards_reads_is_not_stray_and_the_check_is_taken_again(tmp_path, monkeypatch):
    """3 -> 2 shards just as shard-001 is read: shard-000 was read at the old map, shard-001 holds
    shard-002's buckets at the new one. Judged at the old map they were stray (a false problem);
    the map changed, so the whole root is read again, at one version."""
    import cluster.check
    root, coord, ids = a_live_root(tmp_path)
    reads = []

    def rebalanced_meanwhile(folder, **options):
        reads.append(folder.name)
        if reads == ["shard-000", "shard-001"]:
            asyncio.run(coord.rebalance(2))
        return Shard(folder, **options)
    monkeypatch.setattr(cluster.check, "Shard", rebalanced_meanwhile)
    report = check_root(root)
    assert report["ok"], report["problems"]
    assert reads == ["shard-000", "shard-001", "shard-002", "shard-000", "shard-001"]
    assert report["n_shards"] == 2 and set(report["shards"]) == {"shard-000", "shard-001"}
    assert report["items"] == report["held"] == len(ids)
    assert {s: r["items"] for s, r in report["shards"].items()} == held_per_shard(root, ids)
    assert any("shard-002/ is not in the placement map" in w for w in report["warnings"])
    assert not any("going on" in w or "half-done" in w for w in report["warnings"])


def test_a_rebalance_during_every_read_is_a_warning_and_never_a_false_stray(tmp_path, monkeypatch):
    """The cluster goes 3 -> 2 -> 3 -> 2 shards, one rebalance inside each read of shard-001: no
    try sees one map version, and no item is called stray for a bucket that moved while it was read."""
    import cluster.check
    root, coord, ids = a_live_root(tmp_path)
    sizes = iter([2, 3, 2])

    def rebalanced_meanwhile(folder, **options):
        if folder.name == "shard-001":
            asyncio.run(coord.rebalance(next(sizes)))
        return Shard(folder, **options)
    monkeypatch.setattr(cluster.check, "Shard", rebalanced_meanwhile)
    report = check_root(root)
    assert report["ok"], report["problems"]
    assert all(r["stray"] == 0 for r in report["shards"].values())
    assert any("changed during each of 3 reads" in w for w in report["warnings"])
    monkeypatch.undo()
    report = check_root(root)         # once the rebalances are done, it adds up again
    assert report["ok"] and report["items"] == report["held"] == len(ids) and report["n_shards"] == 2
    assert not any("changed during" in w for w in report["warnings"])


def test_the_command_exits_1_on_a_problem_and_2_without_a_root(tmp_path, capsys):
    root, _, _ = a_root(tmp_path)
    assert main(["check", "--storage", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    a_backup_record(root, 1)
    assert main(["check", "--storage", str(root), "--json"]) == 1
    assert main(["check", "--storage", str(tmp_path / "nothing")]) == 2
    assert "no storage root" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("shards", [1, 4])
def test_random_roots_count_what_the_placement_map_says(tmp_path, shards):
    """The report's per-shard counts against the oracle, for other shard counts."""
    root = tmp_path / "r"
    root.mkdir()
    coord = make(root, n_shards=shards)
    coord.placement.save(root)
    rng = np.random.default_rng(shards)
    ids, codes, hists, attrs = random_items(rng, 500, 2, 8, str_ids=True)
    asyncio.run(coord.upsert(ids, codes, hists, attrs))
    gone = [ids[i] for i in rng.choice(len(ids), 120, replace=False)]
    asyncio.run(coord.delete(gone))
    for client in coord.clients.values():
        client.shard.close()
    kept = [i for i in ids if i not in set(gone)]
    report = check_root(root)
    assert report["ok"] and report["items"] == len(kept) == 380
    assert {s: r["items"] for s, r in report["shards"].items()} == held_per_shard(root, kept)
