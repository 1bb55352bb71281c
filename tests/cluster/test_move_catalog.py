"""Moving a catalog into a new storage root, as new models need (deploy/README.md): `export` the old
root, then `index --catalog export.jsonl --images OLD_ROOT` into the new one. Real Ray, real files,
the tiny models. Every item arrives with its attributes (a correction included), its title and its
photo (an uploaded one copied into the new root); with the same models the new root answers as the
old one did; a second pass with --sync brings what changed meanwhile, deletions of uploaded items too.
And a shop's feed whose photos are URLs on a real HTTP server: fetched, kept in the root, synced."""
import csv
import json
import os
import shutil

import numpy as np
import pytest
import ray

from cluster.indexing import index_catalog, read_catalog
from cluster.runtime import NAMESPACE, open_cluster, shutdown_cluster
from shards.query import Query
from shards.shard import ShardConfig

from .photo_server import photo_server
from .test_rest import small_catalog
from .tiny_assets import make_tiny_assets

UPLOAD = "a" * 32 + ".img"
QUIET = {"log": lambda s: None}
INDEX = {**QUIET, "concurrency": 1}    # one model actor: a small catalog needs no more


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("move")
    assets = make_tiny_assets(tmp / "assets")
    os.environ["FASHION_ASSETS"] = str(assets)
    small_catalog(tmp / "catalog", n=10)          # 10 rows, the first photo broken
    ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"FASHION_ASSETS": str(assets)}})
    try:
        yield tmp
    finally:
        try:
            shutdown_cluster()
        finally:     # always: a module after this one starts a Ray of its own
            ray.shutdown()


@pytest.fixture(autouse=True)
def no_cluster_left(tmp):
    """Each test's clusters are gone after it, failed or not: the next one opens its own roots."""
    try:
        yield
    finally:
        shutdown_cluster()


def answers(cluster, queries):
    return [[(h.id, round(h.score, 6)) for h in r.hits] for r in cluster.search_batch(queries)]


def test_a_catalog_moves_into_a_new_root_whole(tmp):
    old_root, new_root = tmp / "old", tmp / "new"
    config = ShardConfig(bits=256, hist_bins=64)
    old = open_cluster(old_root, shards=2, config=config)
    rows = read_catalog(str(tmp / "catalog"))
    # and an item added through POST /items: its photo stored in the root's uploads/, recorded relative to it
    (old_root / "uploads").mkdir()
    shutil.copy(rows[1].image, old_root / "uploads" / UPLOAD)
    [upload_row] = read_catalog(str(_lines(tmp / "upload.jsonl", [{"id": "up-1", "title": "Blue shirt",
                                                                   "image": f"uploads/{UPLOAD}"}])), str(old_root))
    index_catalog(old, rows + [upload_row], errors_path=str(tmp / "errors.jsonl"), **INDEX)  # a broken photo: 10
    corrected = rows[2].id
    old.coordinator_call("update", int(corrected), ["articleType=Shirts", "brand=Acme"])   # PATCH's correction
    old.export(tmp / "export.jsonl", **QUIET)
    before = {it["id"]: it for it in old.items()}
    assert len(before) == 10 and before["up-1"]["meta"]["image"] == f"uploads/{UPLOAD}"
    rng = np.random.default_rng(0)
    queries = [Query(code=rng.integers(0, 2 ** 63, 4, dtype=np.uint64), hist=rng.random(64), k=5,
                     required=required) for required in ((), ("articleType=Shirts",), ("brand=Acme",))]
    old_answers = answers(old, queries)
    old.close()
    shutdown_cluster()

    new = open_cluster(new_root, shards=3, config=config)
    moved = read_catalog(str(tmp / "export.jsonl"), str(old_root))
    report = index_catalog(new, moved, errors_path=str(tmp / "errors-new.jsonl"), uploads_too=True, **INDEX)
    assert report["indexed"] == 10 and report["errors"] == 0
    after = {it["id"]: it for it in new.items()}
    assert {i: (set(it["attributes"]), it["meta"]) for i, it in after.items()} == \
        {i: (set(it["attributes"]), it["meta"]) for i, it in before.items()}
    assert after[int(corrected)]["attributes"] == ["articleType=Shirts", "brand=Acme"]
    assert (new_root / "uploads" / UPLOAD).read_bytes() == (old_root / "uploads" / UPLOAD).read_bytes()
    assert answers(new, queries) == old_answers            # the same models: the same codes and colours

    # meanwhile in the old root: an item deleted, the uploaded one deleted, another corrected
    lines = [json.loads(x) for x in (tmp / "export.jsonl").read_text().splitlines()]
    gone = {lines[0]["id"], "up-1"}
    lines = [x for x in lines if x["id"] not in gone]
    lines[0]["attributes"] = ["articleType=Tops"]
    again = index_catalog(new, read_catalog(str(_lines(tmp / "export2.jsonl", lines)), str(old_root)),
                          errors_path=str(tmp / "errors-new.jsonl"), sync=True, uploads_too=True, **INDEX)
    assert (again["indexed"], again["skipped_existing"], again["deleted"]) == (1, 7, 2)
    after = {it["id"]: it for it in new.items()}
    assert set(after) == set(before) - gone and after[lines[0]["id"]]["attributes"] == ["articleType=Tops"]
    assert not (new_root / "uploads" / UPLOAD).exists()    # the deleted upload's photo went with it
    new.close()
    shutdown_cluster()


def test_a_feeds_photos_are_fetched_by_url_and_kept(tmp):
    photos = {p.name: p.read_bytes() for p in sorted((tmp / "catalog" / "images").glob("*.jpg"))[1:6]}
    assert len(photos) == 5
    root = tmp / "feed-root"
    cluster = open_cluster(root, shards=2, config=ShardConfig(bits=256, hist_bins=64))
    with photo_server(photos) as (url, asked):
        lines = [{"id": f"p-{name}", "title": "Blue shirt", "image": f"{url}/{name}"} for name in photos]
        lines.append({"id": "p-gone", "title": "Red dress", "image": f"{url}/gone.jpg"})      # a 404
        feed = _lines(tmp / "feed.jsonl", lines)
        report = index_catalog(cluster, read_catalog(str(feed)), errors_path=str(tmp / "feed-errors.jsonl"),
                               sync=True, uploads_too=True, **INDEX)
        assert (report["indexed"], report["errors"]) == (5, 1)
        [error] = [json.loads(x) for x in (tmp / "feed-errors.jsonl").read_text().splitlines()]
        assert error["id"] == "p-gone" and error["image"] == f"{url}/gone.jpg" and "HTTP 404" in error["error"]
        items = {it["id"]: it["meta"] for it in cluster.items()}
        for name, body in photos.items():
            meta = items[f"p-{name}"]
            assert meta["source"] == f"{url}/{name}" and (root / meta["image"]).read_bytes() == body
        # the same feed again, as a shop's CSV with an image_link column: nothing fetched or indexed
        # again; a new URL for the same photo: that item again; another photo: its old one removed
        lines[0]["image"] = f"{url}/to/{lines[0]['image'].rsplit('/', 1)[1]}"
        replaced = root / cluster.get(lines[1]["id"])["meta"]["image"]
        lines[1]["image"] = lines[2]["image"]
        fetched = len(asked)
        again = index_catalog(cluster, read_catalog(str(_csv(tmp / "feed.csv", lines[:5]))),
                              errors_path=str(tmp / "feed-errors.jsonl"), sync=True, **INDEX)
        assert (again["indexed"], again["skipped_existing"], again["deleted"]) == (2, 3, 0)
        assert len(asked) == fetched + 3        # the redirect and the photo it leads to; the other photo
        assert cluster.get(lines[0]["id"])["meta"]["source"] == lines[0]["image"]
        now = root / cluster.get(lines[1]["id"])["meta"]["image"]
        assert now.read_bytes() == photos[lines[2]["image"].rsplit("/", 1)[1]] and not replaced.exists()
        assert len(list((root / "uploads").iterdir())) == 5
        # a row dropped from the CSV: the item its URL brought goes with it, and so does its kept photo
        dropped = root / cluster.get(lines[4]["id"])["meta"]["image"]
        shrunk = read_catalog(str(_csv(tmp / "feed.csv", lines[:4])))
        dry = index_catalog(cluster, shrunk, errors_path=str(tmp / "feed-errors.jsonl"), sync=True, dry_run=True,
                            **QUIET)
        assert (dry["would_delete"], dry["delete_examples"]) == (1, [lines[4]["id"]]) and dropped.exists()
        synced = index_catalog(cluster, shrunk, errors_path=str(tmp / "feed-errors.jsonl"), sync=True, **QUIET)
        assert (synced["deleted"], synced["indexed"]) == (1, 0) and not dropped.exists()
        assert len(list((root / "uploads").iterdir())) == 4
        # moved to a new root (new models): the photos come along, and so do their URLs, so the
        # shop's feed synced into the new root finds every item as it is and fetches nothing
        cluster.export(tmp / "feed-export.jsonl", **QUIET)
        before = {it["id"]: it for it in cluster.items()}
        cluster.close()
        shutdown_cluster()
        moved_root = tmp / "feed-root-2"
        cluster = open_cluster(moved_root, shards=2, config=ShardConfig(bits=256, hist_bins=64))
        index_catalog(cluster, read_catalog(str(tmp / "feed-export.jsonl"), str(root)),
                      errors_path=str(tmp / "feed-errors.jsonl"), uploads_too=True, **INDEX)
        assert {it["id"]: it["meta"] for it in cluster.items()} == {i: it["meta"] for i, it in before.items()}
        fetched = len(asked)
        synced = index_catalog(cluster, read_catalog(str(_lines(feed, lines[:4]))),
                               errors_path=str(tmp / "feed-errors.jsonl"), sync=True, uploads_too=True, **INDEX)
        assert (synced["indexed"], synced["skipped_existing"], len(asked)) == (0, 4, fetched)
    for it in before.values():
        assert (moved_root / it["meta"]["image"]).read_bytes() == (root / it["meta"]["image"]).read_bytes()
    cluster.close()


def _csv(path, items):
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "title", "image_link"])
        out.writerows([x["id"], x["title"], x["image"]] for x in items)
    return path


def _lines(path, items):
    path.write_text("".join(json.dumps(x) + "\n" for x in items))
    return path
