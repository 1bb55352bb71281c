"""A backup taken while the cluster serves (cluster/backup.py): it holds every write acknowledged
before it began and nothing half-done, writes wait and none fails, and serving from it restores
the catalog. The copy itself and the write pause are also tested without Ray."""
import asyncio
import json
import os
import threading

import numpy as np
import pytest
import ray

from cluster.backup import ABOUT, copy_root
from cluster.check import check_root
from cluster.cli import main
from cluster.ownership import OWNER
from cluster.runtime import open_cluster, shutdown_cluster
from cluster.shard_actor import NAMESPACE
from shards.errors import InvalidInput, StorageError
from shards.query import Query
from shards.shard import Shard, ShardConfig

from ..coordinator.test_coordinator import make
from ..shards.helpers import random_items

CFG = ShardConfig(bits=128, hist_bins=8)
EVERYTHING = Query(code=np.zeros(2, np.uint64), hist=np.ones(8), k=1000)


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def a_root(tmp_path):
    root = tmp_path / "root"
    (root / "shard-000").mkdir(parents=True)
    (root / "shard-000" / "wal-1.log").write_bytes(b"records" * 1000)
    (root / "shard-000" / "snap-1.tmp").write_bytes(b"half a snapshot")
    (root / "placement.json").write_text("{}")
    (root / OWNER).write_text("{}")
    (root / ".models.json.77.tmp").write_text("half")
    return root


def test_the_copy_is_the_root_less_its_owner_and_temporary_files(tmp_path):
    root = a_root(tmp_path)
    report = copy_root(root, tmp_path / "b", {"items": 3})
    copied = tree(tmp_path / "b")
    about = json.loads(copied.pop(ABOUT))
    assert copied == {"placement.json": b"{}", "shard-000/wal-1.log": b"records" * 1000}
    assert about["items"] == 3 and about["files"] == report["files"] == 2 and about["bytes"] == 7002
    assert not (tmp_path / "b.partial").exists()


def test_a_backup_writes_over_nothing_and_never_into_the_root(tmp_path):
    root = a_root(tmp_path)
    (tmp_path / "taken").mkdir()
    before = tree(tmp_path)
    for dest, why in ((tmp_path / "taken", "exists"), (root / "inside", "overlap"), (root, "exists")):
        with pytest.raises(InvalidInput, match=why):
            copy_root(root, dest)
    assert tree(tmp_path) == before


def test_a_backup_cut_short_leaves_no_dest_and_the_next_one_replaces_it(tmp_path, monkeypatch):
    root = a_root(tmp_path)
    real, calls = os.fsync, []

    def disk_full_on_second(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(fd)
    monkeypatch.setattr(os, "fsync", disk_full_on_second)
    with pytest.raises(StorageError, match="No space left on device.*nothing is at"):
        copy_root(root, tmp_path / "b")
    assert not (tmp_path / "b").exists() and (tmp_path / "b.partial").exists()
    monkeypatch.setattr(os, "fsync", real)
    copy_root(root, tmp_path / "b")
    assert "placement.json" in tree(tmp_path / "b") and not (tmp_path / "b.partial").exists()


def test_a_shard_file_that_goes_away_fails_the_backup_a_photo_does_not(tmp_path, monkeypatch):
    root = a_root(tmp_path)
    (root / "uploads").mkdir()
    real_walk = os.walk

    def walk_listing_a_gone_file(top, gone):
        for folder, subfolders, names in real_walk(top):
            yield folder, subfolders, names + ([gone[1]] if folder.endswith(gone[0]) else [])
    monkeypatch.setattr(os, "walk", lambda top: walk_listing_a_gone_file(top, ("uploads", "42.jpg")))
    assert "uploads/42.jpg" not in tree(copy_root(root, tmp_path / "b") and tmp_path / "b")
    monkeypatch.setattr(os, "walk", lambda top: walk_listing_a_gone_file(top, ("shard-000", "wal-2.log")))
    with pytest.raises(StorageError, match="shard-000/wal-2.log went away during the copy.*run the backup again"):
        copy_root(root, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_writes_wait_while_paused_and_queries_do_not(tmp_path):
    """The coordinator's pause, against in-process shards: a write sent inside waits for the end."""
    coord = make(tmp_path, 2)
    ids, codes, hists, attrs = random_items(np.random.default_rng(0), 50, 2, 8)
    asyncio.run(coord.upsert(ids[:40], codes[:40], hists[:40], attrs[:40]))

    async def run():
        async with coord.writes_paused():
            write = asyncio.create_task(coord.upsert(ids[40:], codes[40:], hists[40:], attrs[40:]))
            answer = await asyncio.wait_for(coord.search(EVERYTHING), 5)   # a query is answered meanwhile
            await asyncio.sleep(0.05)
            assert not write.done() and len(answer.hits) == 40
        await asyncio.wait_for(write, 5)
        return len((await coord.search(EVERYTHING)).hits)
    assert asyncio.run(run()) == 50


def test_no_write_lands_while_the_backup_copies_and_all_land_after(tmp_path, monkeypatch):
    """backup_root over in-process shards: a writer runs throughout; the copy (made slow) sees none of
    its writes land, the backup holds what was there when it began, and every write lands after."""
    import time

    import cluster.backup
    from cluster.backup import backup_root
    root = tmp_path / "root"
    root.mkdir()
    coord = make(root, 2)
    ids, codes, hists, attrs = random_items(np.random.default_rng(2), 60, 2, 8)
    asyncio.run(coord.upsert(ids[:20], codes[:20], hists[:20], attrs[:20]))

    def held_live():
        return sum(len(c.shard) for c in coord.clients.values())
    landed_during, real_copy = [], cluster.backup.copy_root

    def slow_copy(*args):
        before = held_live()
        time.sleep(0.3)                                  # the writer tries meanwhile
        landed_during.append(held_live() - before)
        return real_copy(*args)
    monkeypatch.setattr(cluster.backup, "copy_root", slow_copy)

    async def run():
        async def writer():
            for i in range(20, 60):
                await coord.upsert(ids[i:i + 1], codes[i:i + 1], hists[i:i + 1], attrs[i:i + 1])
                await asyncio.sleep(0.005)
        w = asyncio.create_task(writer())
        await asyncio.sleep(0.05)                         # some writes land before the backup
        report = await backup_root(coord, root, tmp_path / "b")
        await w
        return report
    report = asyncio.run(run())
    assert landed_during == [0] and report["writes_paused_s"] >= 0.3
    assert 20 < report["items"] < 60 and len(held(tmp_path / "b")) == report["items"]
    assert held_live() == 60


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    yield
    try:
        shutdown_cluster()
    finally:   # always: a module after this one starts a Ray of its own
        ray.shutdown()


def held(root):
    """Every item of every shard directory under `root`, read in-process, id -> code."""
    out = {}
    for d in sorted(p for p in root.iterdir() if (p / "shard.json").exists()):
        s = Shard(d, create=False)
        for item_id in s.ids():
            assert item_id not in out, f"{item_id} twice"
            out[item_id] = s.get(item_id)["code"]
        s.close()
    return out


def test_a_backup_under_writes_holds_what_was_acknowledged_and_restores(tmp_path, local_ray):
    rng = np.random.default_rng(1)
    c = open_cluster(tmp_path / "root", shards=2, config=CFG)
    ids, codes, hists, attrs = random_items(rng, 200, 2, 8)
    c.upsert(ids, codes, hists, attrs)
    c.rebalance(3)
    acked = {i: codes[k] for k, i in enumerate(ids)}
    sent, errors, stop = dict(acked), [], threading.Event()

    def writer():   # adds 5 items at a time until stopped, recording what each answer acknowledged
        start = 1000
        while not stop.is_set() and start < 1700:    # the catalog stays under EVERYTHING's k
            more, mc, mh, ma = random_items(rng, 5, 2, 8, start=start)
            sent.update(zip(more, mc))
            try:
                c.upsert(more, mc, mh, ma)
                acked.update(zip(more, mc))
            except Exception as exc:     # noqa: BLE001 (any failure is the test's failure)
                errors.append(exc)
            start += 5
    t = threading.Thread(target=writer)
    t.start()
    while len(acked) < 260:
        stop.wait(0.01)
    before = dict(acked)
    report = c.backup(tmp_path / "backup")
    stop.set()
    t.join()
    assert not errors                                   # writes waited; none failed
    assert len(acked) > len(before)                     # and went on afterwards
    copy = held(tmp_path / "backup")
    assert set(before) <= set(copy) <= set(sent)        # every write acknowledged before it, none invented
    assert all(np.array_equal(np.asarray(copy[i]), sent[i]) for i in copy)
    assert report["items"] == len(copy) and report["shards"] == 3 and not report["unavailable"]
    assert not (tmp_path / "backup" / OWNER).exists()
    checked = check_root(tmp_path / "backup")          # `fashion-search check` on it: whole, nothing out of place
    assert checked["ok"] and checked["items"] == checked["held"] == len(copy), checked["problems"]
    assert checked["backup"]["compared"] and checked["backup"]["items"] == len(copy)

    # restore: a cluster on the backup finds exactly what it holds, searchable
    shutdown_cluster()
    r = open_cluster(tmp_path / "backup")
    found = [h.id for h in r.search(EVERYTHING).hits]
    assert sorted(found, key=str) == sorted(copy, key=str)
    assert r.stats()["version"] == report["placement_version"]
    more = random_items(rng, 3, 2, 8, start=5000)
    r.upsert(*more)                                     # the restored root takes writes
    r.close()
    shutdown_cluster()
    checked = check_root(tmp_path / "backup")           # whole, and no longer held to the backup's count
    assert checked["ok"] and checked["held"] == len(copy) + 3 and checked["backup"]["compared"] is False


def test_the_command_refuses_a_folder_that_exists_before_ray_starts(tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "there").mkdir()
    assert main(["backup", str(tmp_path / "there"), "--storage", str(root)]) == 2
    assert "no cluster at" in capsys.readouterr().err          # a root without a map is refused first
    from coordinator.placement import Placement
    Placement.initial(2).save(root)
    assert main(["backup", str(tmp_path / "there"), "--storage", str(root)]) == 2
    assert "exists: a backup goes into a new folder" in capsys.readouterr().err
