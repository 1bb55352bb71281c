"""`fashion-search similar-items` (cluster/similar_job.py) against in-process shards: each item's line
equals the brute-force oracle, each item gets exactly one line while a rebalance moves buckets, and
an existing file is never written over. The live cluster's run is in test_rest.py."""
import asyncio
import json

import numpy as np
import pytest

from cluster.similar_job import similar_items
from models.similar import similar_query
from shards.errors import InvalidInput
from shards.oracle import brute_force_search
from shards.query import prepare
from shards.shard import Shard

from ..coordinator.test_coordinator import CFG, YieldingShard, make
from ..shards.helpers import model_add, random_items


def catalog(tmp_path, n=300, shards=3):
    coord = make(tmp_path, shards)
    ids, codes, hists, attrs = random_items(np.random.default_rng(8), n, 2, 8, str_ids=True)
    asyncio.run(coord.upsert(ids, codes, hists, attrs))
    model = {}
    model_add(model, ids, codes, hists, attrs, 8)
    return coord, model


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


async def placement_of(coord):
    return coord.placement.to_json()


def test_every_item_gets_the_oracles_similar_items_once(tmp_path):
    coord, model = catalog(tmp_path)
    out = tmp_path / "similar.jsonl"
    report = asyncio.run(similar_items(coord.router, lambda: placement_of(coord), out, 5, 0.3, log=lambda s: None))
    got = lines(out)
    assert sorted((d["id"] for d in got), key=str) == sorted(model, key=str) and report["items"] == len(model)
    assert report["ok"] and not (tmp_path / "similar.jsonl.partial").exists()
    for d in got:
        code, qhist, tokens = model[d["id"]]
        q = similar_query({"code": code, "hist": qhist, "attributes": sorted(tokens)}, 5, 0.3)
        want = [h for h in brute_force_search(model, prepare(q, 128, 8))[0] if h[0] != d["id"]][:5]
        assert [(h["id"], h["score"]) for h in d["similar"]] == [(h[0], h[1]) for h in want]
        assert not d["partial"]


def test_each_item_once_while_a_rebalance_moves_buckets(tmp_path, monkeypatch):
    import coordinator.coordinator
    monkeypatch.setattr(coordinator.coordinator, "MOVE_GROUP", 16)
    coord, model = catalog(tmp_path, shards=2)
    for name in list(coord.clients):
        coord.clients[name] = coord.router.clients[name] = YieldingShard(name, coord.clients[name].shard)
    coord.make_client = lambda s: YieldingShard(s, Shard(tmp_path / s, CFG))
    out = tmp_path / "similar.jsonl"
    seen = set()

    async def placement():
        seen.add(coord.placement.version)
        return coord.placement.to_json()

    async def run():
        job = asyncio.create_task(similar_items(coord.router, placement, out, 3, 0.3, group=8, log=lambda s: None))
        await coord.rebalance(4)
        await coord.rebalance(3)
        return await job
    report = asyncio.run(run())
    ids = [d["id"] for d in lines(out)]
    assert len(ids) == len(set(ids)) and set(ids) == set(model) and report["ok"]
    assert len(seen) > 10                               # the job read while the map changed


def test_a_group_whose_owner_changed_during_the_read_is_read_again(tmp_path):
    """_read_group against a map that names another owner for one bucket while the first read runs:
    the group is read again, from the owners the new map names."""
    from cluster.similar_job import _read_group
    coord, model = catalog(tmp_path, shards=2)
    first = coord.placement.to_json()
    buckets = [int(b) for b in coord.placement.buckets_of(list(model))]
    b0 = next(b for b in buckets if first["owner"][b] == "shard-000")    # a bucket with items, on shard-000
    moved = {**first, "owner": ["shard-001" if b == b0 else s for b, s in enumerate(first["owner"])]}
    maps = iter([first, moved, moved, moved])

    async def placement():
        return next(maps)
    everything = list(range(first["n_buckets"]))
    batch, rereads = asyncio.run(_read_group(coord.router, placement, everything, first["n_buckets"], 5))
    assert rereads == 1
    # read again under the new map: bucket b0 from shard-001, which (really) does not hold it
    assert set(batch["ids"]) == {i for i, b in zip(model, buckets) if b != b0}


def test_an_existing_file_is_not_written_over(tmp_path):
    coord, _ = catalog(tmp_path, n=20)
    out = tmp_path / "similar.jsonl"
    out.write_text("yesterday's\n")
    with pytest.raises(InvalidInput, match="exists"):
        asyncio.run(similar_items(coord.router, lambda: placement_of(coord), out, 3, 0.3))
    assert out.read_text() == "yesterday's\n"


class Stop(Exception):
    pass


def test_a_stopped_job_resumed_writes_what_one_whole_run_writes(tmp_path):
    """Stopped after a few groups, with half a group's lines past what it made durable (as a crash
    leaves them), then resumed: the file is line for line the one an unbroken run writes."""
    coord, model = catalog(tmp_path)
    whole, out = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    asyncio.run(similar_items(coord.router, lambda: placement_of(coord), whole, 4, 0.3, group=256,
                              log=lambda s: None))
    groups = []

    def stop_after_five(line):
        groups.append(line)
        if len(groups) == 5:
            raise Stop
    with pytest.raises(Stop):
        asyncio.run(similar_items(coord.router, lambda: placement_of(coord), out, 4, 0.3, group=256,
                                  log=stop_after_five))
    partial = tmp_path / "resumed.jsonl.partial"
    progress = json.loads((tmp_path / "resumed.jsonl.progress").read_text())
    assert progress["next_bucket"] == 5 * 256 and 0 < progress["items"] < len(model)
    with open(partial, "a") as f:
        f.write('{"id": "torn", "simil')            # written after the last durable group, then cut
    with pytest.raises(InvalidInput, match="--resume"):   # other settings: refused, nothing touched
        asyncio.run(similar_items(coord.router, lambda: placement_of(coord), out, 5, 0.3, group=256,
                                  log=lambda s: None, resume=True))
    report = asyncio.run(similar_items(coord.router, lambda: placement_of(coord), out, 4, 0.3, group=256,
                                       log=lambda s: None, resume=True))
    assert report["resumed_at_bucket"] == 5 * 256 and report["items"] == len(model) and report["ok"]
    assert out.read_text() == whole.read_text()
    assert not partial.exists() and not (tmp_path / "resumed.jsonl.progress").exists()


def test_resume_with_nothing_to_resume_starts_from_the_beginning(tmp_path):
    coord, model = catalog(tmp_path, n=50)
    out = tmp_path / "s.jsonl"
    (tmp_path / "s.jsonl.progress").write_text('{"stale": true}')   # no .partial beside it: ignored
    report = asyncio.run(similar_items(coord.router, lambda: placement_of(coord), out, 3, 0.3,
                                       log=lambda s: None, resume=True))
    assert report["resumed_at_bucket"] is None and len(lines(out)) == report["items"] == len(model)
