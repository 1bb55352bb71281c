"""The REST daemon on a real Ray Serve app (tiny untrained models), an HTTP client,
the CLI against it, and the web page in headless Chromium."""
import base64
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray
from PIL import Image
from ray import serve

from shards.errors import InvalidInput

from .tiny_assets import make_tiny_assets

PROJECT = Path(__file__).resolve().parents[2]
KEY = "test-key-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_catalog(folder: Path, n: int = 24) -> Path:
    src = PROJECT / "demo" / "catalog"
    rows = list(csv.DictReader(open(src / "styles.csv")))[:n]
    (folder / "images").mkdir(parents=True)
    with open(folder / "styles.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        shutil.copy(src / "images" / f"{r['id']}.jpg", folder / "images" / f"{r['id']}.jpg")
    (folder / "images" / f"{rows[0]['id']}.jpg").write_bytes(b"broken")   # one broken photo
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rest")
    assets = make_tiny_assets(tmp / "assets")
    os.environ["FASHION_ASSETS"] = str(assets)
    from cluster.demo import serve_environment
    serve_environment()
    # a batch job runs `fashion-search` on the cluster: it must be on the nodes' PATH, as on a real one
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    metrics_port = free_port()
    ray.init(namespace="fashion-search", include_dashboard=True, log_to_driver=False,   # the job API needs it
             runtime_env={"env_vars": {"FASHION_ASSETS": str(assets)}}, _metrics_export_port=metrics_port)
    from cluster.demo import start_server
    from cluster.indexing import index_catalog, read_catalog
    from cluster.runtime import open_cluster, shutdown_cluster
    from cluster.settings import Settings
    from shards.shard import ShardConfig
    storage = tmp / "storage"
    cluster = open_cluster(storage, shards=2, config=ShardConfig(bits=256, hist_bins=64))
    rows = read_catalog(str(small_catalog(tmp / "catalog")))
    report = index_catalog(cluster, rows, errors_path=str(tmp / "errors.jsonl"), concurrency=1,
                           log=lambda s: None)   # one model actor: 24 rows need no more
    port = free_port()
    start_server(Settings(storage=str(storage), samples=str(PROJECT / "demo" / "samples"), port=port,
                          api_key=KEY, rate_limit=1000, max_upload_bytes=2_000_000))
    yield {"url": f"http://127.0.0.1:{port}", "index": report, "tmp": tmp, "cluster": cluster,
           "metrics": f"http://127.0.0.1:{metrics_port}/metrics"}
    try:
        serve.shutdown()
        shutdown_cluster()
    finally:   # always: a module after this one starts a Ray of its own
        ray.shutdown()


def jpeg(color=(200, 30, 30), size=(120, 160)) -> bytes:
    buf = io.BytesIO()
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:] = color
    arr[40:120, 30:90] = (20, 20, 200)
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def search(url, data=None, image=None, ctype="image/jpeg"):
    files = {"image": ("q.jpg", image if image is not None else jpeg(), ctype)}
    return httpx.post(url + "/search", files=files, data=data or {}, timeout=60)


def test_a_batch_job_submitted_to_the_cluster_runs_there(server):
    """`fashion-search batch --address`: the Ray job API runs the job on the cluster, from any working directory."""
    import time

    from ray.job_submission import JobStatus, JobSubmissionClient

    from cluster.cli import build_parser, cmd_batch
    tmp = server["tmp"]
    photos = sorted((tmp / "catalog" / "images").glob("*.jpg"))[1:3]
    (tmp / "job dir").mkdir()
    queries = tmp / "job dir" / "queries.csv"
    queries.write_text("image,ref\n" + "".join(f"{p},r{i}\n" for i, p in enumerate(photos)))
    address = ray.get_runtime_context().gcs_address
    cwd = os.getcwd()
    os.chdir(tmp / "job dir")      # relative paths, as a user types them, and one with a space above it
    try:
        args = build_parser().parse_args(["batch", "queries.csv", "--out", "results.jsonl", "--k", "3",
                                          "--address", address, "--storage", str(tmp / "storage")])
        job = cmd_batch(args)["submitted"]
    finally:
        os.chdir(cwd)
    client = JobSubmissionClient(address)
    deadline = time.monotonic() + 240
    while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.monotonic() < deadline, client.get_job_logs(job)[-3000:]
        time.sleep(1)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, client.get_job_logs(job)[-3000:]
    lines = [json.loads(x) for x in (tmp / "job dir" / "results.jsonl").read_text().splitlines()]
    assert [d["query"]["ref"] for d in lines] == ["r0", "r1"]
    assert all(1 <= len(d["results"]) <= 3 for d in lines)


QUIET = {"log": lambda s: None, "concurrency": 1}   # one model actor: a few rows need no more


def test_indexing_skips_broken_rows_and_resumes(server):
    rep = server["index"]
    assert rep["indexed"] == 23 and rep["errors"] == 1
    from cluster.indexing import index_catalog, read_catalog
    from shards.codes import id_from_text
    rows = read_catalog(str(server["tmp"] / "catalog"))
    again = index_catalog(server["cluster"], rows, errors_path=str(server["tmp"] / "errors2.jsonl"), **QUIET)
    assert again["skipped_existing"] == 23 and again["indexed"] == 0
    # a row that repeats an earlier id is set aside, not indexed over the first
    errors = server["tmp"] / "errors3.jsonl"
    third = index_catalog(server["cluster"], rows + rows[1:2], errors_path=str(errors), **QUIET)
    assert third["repeated_ids"] == 1 and third["rows"] == 25 and third["indexed"] == 0
    assert "repeats an earlier row" in errors.read_text() and rows[1].id in errors.read_text()

    # --sync: the rows are the whole catalog; a changed title is read again, a dropped row's item goes,
    # an item added through the API stays; syncing with every row again restores the catalog
    from dataclasses import replace
    h = {"X-API-Key": KEY}
    assert httpx.post(server["url"] + "/items", files={"image": ("a.jpg", jpeg(), "image/jpeg")},
                      data={"title": "Men Red Shirt", "id": "from-the-api"}, headers=h, timeout=60).status_code == 201
    changed = [replace(rows[2], title="Renamed " + rows[2].title)] + rows[3:-2]
    # a cut-short CSV: refused before anything is written
    before = server["cluster"].stats()["items"]
    with pytest.raises(InvalidInput, match="no longer names 19 of the 23"):
        index_catalog(server["cluster"], changed[:4], errors_path=str(errors), **QUIET, sync=True)
    assert server["cluster"].stats()["items"] == before
    assert server["cluster"].get(id_from_text(rows[2].id))["meta"]["title"] == rows[2].title
    # a dry run says what the sync will do, and writes nothing (the cut-short CSV's refusal included)
    seen = errors.read_text()
    dry = index_catalog(server["cluster"], rows[:2] + changed + rows[1:2], errors_path=str(errors),
                        **QUIET, sync=True, dry_run=True)
    assert sorted(dry.pop("delete_examples"), key=str) == sorted((id_from_text(r.id) for r in rows[-2:]), key=str)
    assert dry == {"dry_run": True, "rows": 23, "skipped_existing": 20, "would_index": 2, "repeated_ids": 1,
                   "invalid_ids": 0, "would_delete": 2, "refused": None}, dry   # the renamed row, the broken one
    cut = index_catalog(server["cluster"], changed[:4], errors_path=str(errors), **QUIET, sync=True,
                        dry_run=True)
    assert cut["would_delete"] == 19 and "no longer names 19 of the 23" in cut["refused"]
    assert errors.read_text() == seen and server["cluster"].stats()["items"] == before
    assert server["cluster"].get(id_from_text(rows[2].id))["meta"]["title"] == rows[2].title
    synced = index_catalog(server["cluster"], rows[:2] + changed, errors_path=str(errors), **QUIET,
                           sync=True)
    assert synced["indexed"] == 1 and synced["deleted"] == 2 and synced["skipped_existing"] == 20, synced
    cluster = server["cluster"]
    assert cluster.get(id_from_text(rows[2].id))["meta"]["title"] == "Renamed " + rows[2].title
    assert not any(cluster.existing([id_from_text(r.id) for r in rows[-2:]]))
    assert cluster.existing(["from-the-api"]) == [True]
    restored = index_catalog(cluster, rows, errors_path=str(errors), **QUIET, sync=True)
    assert restored["indexed"] == 3 and restored["deleted"] == 0 and restored["skipped_existing"] == 20
    # a photo replaced at the same path after a whole sync began is read again by the next one
    assert not (server["tmp"] / "storage" / "last-sync.json").exists()    # the broken row failed each time
    whole = index_catalog(cluster, rows[1:], errors_path=str(errors), **QUIET, sync=True)
    assert whole["indexed"] == whole["deleted"] == whole["errors"] == 0
    assert (server["tmp"] / "storage" / "last-sync.json").exists()
    later = time.time() + 5
    os.utime(rows[5].image, (later, later))
    again = index_catalog(cluster, rows[1:], errors_path=str(errors), **QUIET, sync=True)
    assert again["indexed"] == 1 and again["skipped_existing"] == 22
    assert httpx.delete(server["url"] + "/items/from-the-api", headers=h).status_code == 200


def test_three_query_options(server):
    url = server["url"]
    r1 = search(url)
    assert r1.status_code == 200, r1.text
    b1 = r1.json()
    assert b1["category_source"] == "auto" and b1["roi_source"] in ("whole image", "detector")
    assert b1["results"] and {"id", "score", "hamming", "colour_distance", "matched", "title", "image_url"} <= set(
        b1["results"][0])
    assert all(a["token"].count("=") == 1 and 0 <= a["probability"] <= 1 for a in b1["attributes"])
    # tokens the search did without: too few items had them, or the scan fit the budget without them
    assert isinstance(b1["relaxed"], list) and isinstance(b1["widened"], list)
    assert not set(b1["relaxed"]) & set(b1["widened"])
    assert set(b1["relaxed"] + b1["widened"]) <= {a["token"] for a in b1["attributes"]}
    # the runner-up category searched too (models/hedge.py): the tiny untrained model is never sure enough
    assert b1["hedged"] is None
    cats = httpx.get(url + "/categories").json()
    groups = httpx.get(url + "/categories", params={"grouped": "true"}).json()   # for the page's <optgroup>s
    assert sorted(c for group in groups.values() for c in group) == cats == sorted(cats)
    r2 = search(url, {"category": cats[0]}).json()
    assert r2["category"] == cats[0] and r2["category_source"] == "user" and r2["hedged"] is None
    assert any(a["token"] == f"articleType={cats[0]}" for a in r2["attributes"])
    # a person's spelling of it names the same category, and the same search follows
    spelt = search(url, {"category": f"  {cats[0].lower()} "}).json()
    assert spelt["category"] == cats[0] and spelt["results"] == r2["results"]
    r3 = search(url, {"box": "10,20,60,80"}).json()
    assert r3["roi"] == [10, 20, 60, 80] and r3["roi_source"] == "user"
    # the catalog picks the region; the tiny models have no detector, so the whole photo is the one region
    r4 = search(url, {"roi": "match"}).json()
    assert r4["roi_source"] == "whole image" and r4["roi"][:2] == [0, 0]
    assert [h["id"] for h in r4["results"]] == [h["id"] for h in b1["results"]]
    scores = [h["score"] for h in b1["results"]]
    assert scores == sorted(scores)


def test_options_come_in_the_form_or_the_url_and_unknown_ones_are_refused(server):
    """`curl -F image=@x.jpg 'host/search?k=5'` is read as the form would be; a misspelt option is
    a 400 naming the ones the route takes, never a search that quietly did without it."""
    url = server["url"]
    in_form = search(url, {"box": "10,20,60,80", "k": "3"}).json()
    files = {"image": ("q.jpg", jpeg(), "image/jpeg")}
    in_url = httpx.post(url + "/search", params={"box": "10,20,60,80", "k": "3"}, files=files, timeout=60).json()
    assert in_url["roi"] == [10, 20, 60, 80] and len(in_url["results"]) == 3
    assert in_url["results"] == in_form["results"]
    for bad in (httpx.post(url + "/search", params={"catgory": "Shirts"}, files=files, timeout=60),
                search(url, {"catgory": "Shirts"}),
                httpx.post(url + "/search", params={"k": "3"}, data={"k": "4"}, files=files, timeout=60),
                httpx.get(url + "/items", params={"limt": "5"}),
                httpx.get(url + "/items/1/similar", params={"k": "3", "filter": "gender=Men"})):
        assert bad.status_code == 400, bad.text
        assert "unknown option" in bad.json()["error"] or "given twice" in bad.json()["error"]
    said = search(url, {"catgory": "Shirts"}).json()["error"]
    assert said == ("unknown option 'catgory' (did you mean 'category'?): POST /search takes box, category, "
                    "filters, image, k, roi")
    # a write's fields too: the title in the URL adds the item; an unknown field adds nothing
    h = {"X-API-Key": KEY}
    r = httpx.post(url + "/items", params={"title": "Red Men Shirt", "id": "url-1"}, files=files, headers=h,
                   timeout=60)
    assert r.status_code == 201, r.text
    assert httpx.get(url + "/items/url-1").json()["meta"]["title"] == "Red Men Shirt"
    r = httpx.post(url + "/items", data={"title": "Red Men Shirt", "id": "url-2", "colour": "red"}, files=files,
                   headers=h, timeout=60)
    assert r.status_code == 400 and "'colour'" in r.json()["error"]
    assert httpx.get(url + "/items/url-2").status_code == 404
    assert httpx.delete(url + "/items/url-1", headers=h).status_code == 200


def test_a_phone_photo_is_searched_the_way_it_is_shown(server):
    """A phone stores a portrait photo as landscape pixels plus an EXIF orientation; the page shows
    it upright and the user's box is drawn there. Searched, it answers as the upright photo does."""
    upright = np.random.default_rng(3).integers(0, 256, (200, 120, 3), dtype=np.uint8)   # 120 wide, 200 high
    exif = Image.Exif()
    exif[0x0112] = 6                                # "turn 90 degrees clockwise to show"
    photos = {}
    for name, pixels, tags in (("upright", upright, {}), ("phone", np.rot90(upright), {"exif": exif})):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", **tags)
        photos[name] = buf.getvalue()
    box = {"box": "20,110,80,80"}                   # the lower half: outside the stored 200 x 120 pixels
    answers = {name: search(server["url"], {**box, "k": "8"}, image=photo, ctype="image/png")
               for name, photo in photos.items()}
    assert answers["phone"].status_code == 200, answers["phone"].text
    phone, upright_answer = answers["phone"].json(), answers["upright"].json()
    assert phone["roi"] == upright_answer["roi"] == [20, 110, 80, 80]
    assert phone["attributes"] == upright_answer["attributes"]
    assert [h["id"] for h in phone["results"]] == [h["id"] for h in upright_answer["results"]]


def test_the_served_answer_is_the_in_process_pipelines(server):
    """The REST path reads attributes and appearance on separate replicas at once; the in-process
    pipeline reads them in turn. Same photo, same models: same reading, same hits. Also for a
    photo over WORKING_SIDE (read in a smaller copy, a phone-sized JPEG decoded at reduced scale;
    the box and ROI in its own pixels) and
    with the catalog picking the region (the tiny models have no detector: the whole photo)."""
    import torch
    from models.data import decode_photo
    from models.pipeline import Pipeline
    from shards.query import Query
    pipeline = Pipeline.load(Path(os.environ["FASHION_ASSETS"]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # as the replicas run: the same sums in the same order
    try:
        def best_hit_scores(codes, hists):
            answers = server["cluster"].search_batch([Query(code=c, hist=h, k=1, w_colour=pipeline.w_colour)
                                                      for c, h in zip(codes, hists)])
            return [a.hits[0].score if a.hits else float("inf") for a in answers]
        cases = [({}, None, (120, 160)), ({"box": "10,20,60,80"}, (10, 20, 60, 80), (120, 160)),
                 ({}, None, (1500, 2000)), ({"box": "300,500,600,700"}, (300, 500, 600, 700), (1500, 2000)),
                 ({"roi": "match"}, None, (120, 160)),
                 # a phone's size: the JPEG is decoded at 1/2 scale (decode_photo), the box and ROI are not
                 ({}, None, (3024, 4032)), ({"box": "600,1000,1200,1400"}, (600, 1000, 1200, 1400), (3024, 4032))]
        for i, (data, box, size) in enumerate(cases):
            photo = jpeg(color=((30 * i + 100) % 256, 180, 60), size=size)
            served = search(server["url"], {**data, "k": "8"}, image=photo).json()
            match = best_hit_scores if data.get("roi") == "match" else None
            mine = pipeline.query(decode_photo(photo), box=box, match=match)     # as the front reads it
            assert served["roi"] == list(box or (0, 0) + size)
            assert [a["token"] for a in served["attributes"]] == [t for t, _ in mine.attributes]
            assert np.allclose([a["probability"] for a in served["attributes"]], [p for _, p in mine.attributes],
                               atol=1e-5)
            assert served["roi"] == list(mine.roi) and served["roi_source"] == mine.roi_source
            expected = server["cluster"].search(Query(code=mine.code, hist=mine.hist, k=8, w_colour=pipeline.w_colour,
                                                      **mine.query_terms()))
            assert [h["id"] for h in served["results"]] == [h.id for h in expected.hits]
            t = served["timings_ms"]
            assert t["total"] >= t["analysis"] >= max(t["attributes"], t["features"]) > 0
    finally:
        torch.set_num_threads(threads)


def test_add_then_find_then_delete(server):
    url = server["url"]
    uploads = server["tmp"] / "storage" / "uploads"
    before = set(uploads.iterdir())
    img = jpeg((10, 200, 40))
    r = httpx.post(url + "/items", files={"image": ("x.jpg", img, "image/jpeg")},
                   data={"title": "Test Men Green Tshirts", "id": "sku-new-1"}, headers={"X-API-Key": KEY}, timeout=60)
    assert r.status_code == 201, r.text
    added = r.json()
    read = [a["token"] for a in added["recognised"]]
    # indexed under the read, then the runners-up (the tiny untrained model rarely has any at p >= 0.1;
    # tests/models/test_query_constraints.py checks the item path with them)
    assert added["attributes"] == read + [a["token"] for a in added["runners_up"]]
    assert {"gender=Men", "baseColour=Green"} <= set(read)    # as the title says
    assert {"gender=Men", "baseColour=Green"} <= set(added["from_title"]) <= set(read)
    found = search(url, {"k": "5"}, image=img).json()
    assert found["results"][0]["id"] == "sku-new-1" and found["results"][0]["hamming"] == 0
    got = httpx.get(url + "/items/sku-new-1").json()
    assert got["meta"]["title"] == "Test Men Green Tshirts"
    assert "image" not in got["meta"] and got["image_url"] == f"/items/{got['id']}/image"   # no server paths out
    assert sorted(got["attributes"]) == sorted(added["attributes"])
    assert httpx.get(url + "/items/sku-new-1/image").content == img
    assert len(set(uploads.iterdir()) - before) == 1
    # replaced: the new photo is served and the old one is gone; refused: no file is left behind
    img2 = jpeg((200, 200, 40))
    r = httpx.post(url + "/items", files={"image": ("y.jpg", img2, "image/jpeg")},
                   data={"title": "Test Men Yellow Tshirts", "id": "sku-new-1"}, headers={"X-API-Key": KEY}, timeout=60)
    assert r.status_code == 201 and httpx.get(url + "/items/sku-new-1/image").content == img2
    stored = set(uploads.iterdir()) - before
    assert len(stored) == 1 and next(iter(stored)).read_bytes() == img2
    r = httpx.post(url + "/items", files={"image": ("z.jpg", jpeg(), "image/jpeg")},
                   data={"title": "Two categories", "id": "sku-new-1", "attributes": "articleType=a,articleType=b"},
                   headers={"X-API-Key": KEY}, timeout=60)
    assert r.status_code == 400 and set(uploads.iterdir()) - before == stored
    assert httpx.get(url + "/items/sku-new-1/image").content == img2
    assert httpx.delete(url + "/items/sku-new-1", headers={"X-API-Key": KEY}).status_code == 200
    assert set(uploads.iterdir()) == before
    assert httpx.get(url + "/items/sku-new-1").status_code == 404
    gone = httpx.delete(url + "/items/sku-new-1", headers={"X-API-Key": KEY})
    assert gone.status_code == 404 and "no item" in gone.json()["error"]
    again = search(url, {"k": "5"}, image=img).json()
    assert all(h["id"] != "sku-new-1" for h in again["results"])


def test_an_items_photo_is_served_as_a_browser_can_show_it(server):
    """A PNG goes as it came, as image/png; an iPhone's HEIC (which only Safari shows) as a JPEG."""
    heic = (Path(__file__).parents[1] / "models" / "photos" / "two_halves.heic").read_bytes()
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 30, 3), (10, 120, 240), np.uint8)).save(buf, format="PNG")
    for item_id, photo, kind in (("sku-heic", heic, "image/heic"), ("sku-png", buf.getvalue(), "image/png")):
        r = httpx.post(server["url"] + "/items", files={"image": ("photo", photo, kind)},
                       data={"title": "Test Women Blue Tops", "id": item_id}, headers={"X-API-Key": KEY}, timeout=60)
        assert r.status_code == 201, r.text
    png = httpx.get(server["url"] + "/items/sku-png/image")
    assert png.headers["content-type"] == "image/png" and png.content == buf.getvalue()
    shown = httpx.get(server["url"] + "/items/sku-heic/image")
    assert shown.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(shown.content)) as jpg:
        pixels = np.asarray(jpg).astype(int)
    assert jpg.format == "JPEG" and pixels.shape == (48, 64, 3)
    assert np.abs(pixels[:, :28] - (220, 30, 30)).max() < 40 and np.abs(pixels[:, 36:] - (30, 30, 220)).max() < 40
    # a results page's tile: a JPEG at most max_side a side for a bigger photo, the photo itself otherwise
    tile = httpx.get(server["url"] + "/items/sku-png/image", params={"max_side": "20"})
    with Image.open(io.BytesIO(tile.content)) as small:
        assert tile.headers["content-type"] == "image/jpeg" and small.size == (15, 20)
        assert np.abs(np.asarray(small).astype(int) - (10, 120, 240)).max() < 12
    assert httpx.get(server["url"] + "/items/sku-png/image", params={"max_side": "40"}).content == buf.getvalue()
    with Image.open(io.BytesIO(httpx.get(server["url"] + "/items/sku-heic/image",
                                         params={"max_side": "32"}).content)) as small:
        assert small.size == (32, 24)
    # a browser asks again with the version it holds: 304 while the photo is the same, the new one once replaced
    first = httpx.get(server["url"] + "/items/sku-png/image", params={"max_side": "20"})
    same = httpx.get(server["url"] + "/items/sku-png/image", params={"max_side": "20"},
                     headers={"If-None-Match": first.headers["etag"]})
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == first.headers["etag"]
    other_size = httpx.get(server["url"] + "/items/sku-png/image", headers={"If-None-Match": first.headers["etag"]})
    assert other_size.status_code == 200 and other_size.headers["etag"] != first.headers["etag"]
    r = httpx.post(server["url"] + "/items", files={"image": ("photo", heic, "image/heic")},
                   data={"title": "Test Women Red Tops", "id": "sku-png"}, headers={"X-API-Key": KEY}, timeout=60)
    assert r.status_code == 201, r.text
    replaced = httpx.get(server["url"] + "/items/sku-png/image", params={"max_side": "20"},
                         headers={"If-None-Match": first.headers["etag"]})
    assert replaced.status_code == 200 and replaced.headers["etag"] != first.headers["etag"]
    for bad in ("0", "-3", "ten", "5000"):
        r = httpx.get(server["url"] + "/items/sku-png/image", params={"max_side": bad})
        assert r.status_code == 400 and "max_side" in r.json()["error"]
    for item_id in ("sku-heic", "sku-png"):
        assert httpx.delete(f"{server['url']}/items/{item_id}", headers={"X-API-Key": KEY}).status_code == 200


def test_access_control(server):
    url = server["url"]
    files = {"image": ("x.jpg", jpeg(), "image/jpeg")}
    assert httpx.post(url + "/items", files=files, data={"title": "t"}).status_code == 401
    assert httpx.post(url + "/items", files=files, data={"title": "t"},
                      headers={"X-API-Key": "wrong"}).status_code == 403
    assert httpx.post(url + "/admin/rebalance", json={"shards": 3}).status_code == 401
    assert httpx.delete(url + "/items/1").status_code == 401


@pytest.mark.parametrize("data,image,ctype,status", [
    ({"k": "0"}, None, "image/jpeg", 400),
    ({"k": "-1"}, None, "image/jpeg", 400),
    ({"k": "1000000000"}, None, "image/jpeg", 400),
    ({"k": "ten"}, None, "image/jpeg", 400),
    ({"box": "-5,0,10,10"}, None, "image/jpeg", 400),
    ({"box": "0,0,0,10"}, None, "image/jpeg", 400),
    ({"box": "100,100,500,500"}, None, "image/jpeg", 400),
    ({"box": "a,b"}, None, "image/jpeg", 400),
    ({"category": "Spaceships"}, None, "image/jpeg", 400),
    ({"filters": "not a token"}, None, "image/jpeg", 400),
    ({"roi": "telepathy"}, None, "image/jpeg", 400),
    ({}, b"", "image/jpeg", 400),
    ({}, b"not an image at all", "image/jpeg", 400),
    ({}, jpeg()[:300], "image/jpeg", 400),
    ({}, jpeg(), "text/plain", 415),
])
def test_bad_input_is_a_clear_4xx(server, data, image, ctype, status):
    r = search(server["url"], data, image, ctype)
    assert r.status_code == status, r.text
    assert "error" in r.json()
    assert httpx.get(server["url"] + "/health").json() == {"status": "ok", "shards": 2, "answering": 2,
                                                            "unavailable": {}, "coordinator": "ok"}


def test_limits_titles_and_admin_json(server):
    url = server["url"]
    big = os.urandom(2_500_000)
    r = search(url, {}, big)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    files = {"image": ("x.jpg", jpeg(), "image/jpeg")}
    h = {"X-API-Key": KEY}
    assert httpx.post(url + "/items", files=files, data={"title": "x" * 5000}, headers=h).status_code == 400
    r = httpx.post(url + "/items", files=files, data={"title": "Ünïcødé 靴 Men Shoes 👟", "id": "uni-1"},
                   headers=h, timeout=60)
    assert r.status_code == 201
    assert httpx.get(url + "/items/uni-1").json()["meta"]["title"] == "Ünïcødé 靴 Men Shoes 👟"
    for body in (b"{not json", b'{"shards": "three"}', b'{"shards": 0}', b"[]", b'{"shards": 2, "dryrun": true}'):
        r = httpx.post(url + "/admin/rebalance", content=body, headers=h)
        assert r.status_code == 400, body
    assert httpx.get(url + "/health").status_code == 200


def test_admin_backup_copies_the_catalog_and_refuses_bad_folders(server):
    url, h, tmp = server["url"], {"X-API-Key": KEY}, server["tmp"]
    dest = tmp / "backups" / "first"
    assert httpx.post(url + "/admin/backup", json={"dest": str(dest)}).status_code == 401
    for body in (b"{not json", b"[]", b"{}",
                 b'{"dest": "relative/folder"}', b'{"dest": 3}', b'{"dest": "/tmp/x", "to": "/y"}'):
        r = httpx.post(url + "/admin/backup", content=body, headers=h)
        assert r.status_code == 400 and "error" in r.json(), body
    img = jpeg((10, 200, 90))
    r = httpx.post(url + "/items", files={"image": ("b.jpg", img, "image/jpeg")},
                   data={"title": "Men Green Shirt", "id": "backed-up"}, headers=h, timeout=60)
    assert r.status_code == 201, r.text
    r = httpx.post(url + "/admin/backup", json={"dest": str(dest)}, headers=h, timeout=120)
    assert r.status_code == 200, r.text
    report = r.json()
    # the item records its photo relative to the root, so the copy (served from, once restored) holds it
    recorded = server["cluster"].coordinator_call("get", "backed-up")["meta"]["image"]
    assert recorded.startswith("uploads/") and (dest / recorded).read_bytes() == img
    assert report["items"] == httpx.get(url + "/stats").json()["items"] and not report["unavailable"]
    root = server["tmp"] / "storage"
    in_root = {p.name for p in root.iterdir() if not p.name.endswith(".tmp")} - {"owner.json"}
    assert {p.name for p in dest.iterdir()} - {"backup.json"} == in_root
    assert {"placement.json", "cluster.json", "shard-000", "shard-001"} <= {p.name for p in dest.iterdir()}
    # checked over REST too: the backup, and the root it was made from
    assert httpx.post(url + "/admin/check", json={}).status_code == 401
    checked = httpx.post(url + "/admin/check", json={"path": str(dest)}, headers=h, timeout=120)
    assert checked.status_code == 200, checked.text
    assert checked.json()["ok"] and checked.json()["items"] == report["items"]
    served = httpx.post(url + "/admin/check", json={}, headers=h, timeout=120).json()
    assert served["ok"] and served["root"] == str(root.resolve()) and served["items"] == report["items"]
    for body in (b"[]", b'{"path": "relative"}', b'{"path": 3}', b'{"dest": "/x"}'):
        r = httpx.post(url + "/admin/check", content=body, headers=h)
        assert r.status_code == 400 and "error" in r.json(), body
    r = httpx.post(url + "/admin/check", json={"path": str(tmp / "no-such-root")}, headers=h, timeout=60)
    assert r.status_code == 400 and "no storage root" in r.json()["error"]
    r = httpx.post(url + "/admin/backup", json={"dest": str(dest)}, headers=h)
    assert r.status_code == 400 and "exists" in r.json()["error"]
    assert httpx.get(url + "/health").json()["status"] == "ok"
    assert httpx.delete(url + "/items/backed-up", headers=h).status_code == 200


def test_similar_items_of_a_catalog_item_equal_brute_force(server):
    """GET /items/{id}/similar: the item's own code, colour and tokens as the query, the item left out."""
    from models.features import colour_weight
    from models.similar import similar_query
    from shards.oracle import brute_force_search
    from shards.query import prepare
    url, cluster = server["url"], server["cluster"]
    ids = [int(r["id"]) for r in csv.DictReader(open(server["tmp"] / "catalog" / "styles.csv"))][1:]
    items = {i: cluster.get(i) for i in ids}
    model = {i: (it["code"], it["hist"], set(it["attributes"])) for i, it in items.items()}
    w_colour = colour_weight(Path(os.environ["FASHION_ASSETS"]) / "features.pt")
    for i in ids[:6]:
        r = httpx.get(f"{url}/items/{i}/similar", params={"k": "4"})
        assert r.status_code == 200, r.text
        body = r.json()
        q = similar_query(items[i], 4, w_colour)
        hits, _, _ = brute_force_search(model, prepare(q, 256, 64))
        want = [h for h in hits if h[0] != i][:4]
        assert [(h["id"], h["score"]) for h in body["results"]] == [(h[0], h[1]) for h in want]
        assert body["id"] == i and i not in [h["id"] for h in body["results"]] and not body["partial"]
        assert len(body["results"]) == 4
        assert all(h["image_url"] == f"/items/{h['id']}/image" for h in body["results"])
    assert httpx.get(f"{url}/items/999999999/similar").status_code == 404
    assert httpx.get(f"{url}/items/{ids[0]}/similar", params={"k": "0"}).status_code == 400


def test_the_similar_items_job_answers_every_item_as_the_api_does(server):
    """`fashion-search similar-items` on the live cluster: one line per item, each as GET /items/{id}/similar."""
    from models.features import colour_weight
    url, cluster, tmp = server["url"], server["cluster"], server["tmp"]
    out = tmp / "similar" / "items.jsonl"
    out.parent.mkdir()
    w_colour = colour_weight(Path(os.environ["FASHION_ASSETS"]) / "features.pt")
    report = cluster.similar_items(out, 4, w_colour, log=lambda s: None)
    got = {d["id"]: d for d in map(json.loads, out.read_text().splitlines())}
    assert report["ok"] and report["items"] == len(got) == cluster.stats()["items"]
    for item_id in list(got)[:5]:
        api = httpx.get(f"{url}/items/{item_id}/similar", params={"k": "4"}).json()
        assert [(h["id"], h["score"]) for h in got[item_id]["similar"]] == [
            (h["id"], h["score"]) for h in api["results"]]
    with pytest.raises(InvalidInput, match="exists"):
        cluster.similar_items(out, 4, w_colour)


def test_correcting_an_items_attributes_and_title(server):
    """PATCH /items/{id}: the shop fixes what the model misread; the photo, code and colour stay."""
    url, cluster, h = server["url"], server["cluster"], {"X-API-Key": KEY}
    item = cluster.coordinator_call("list_items", None, 1)["items"][0]
    before = cluster.coordinator_call("get", item["id"])
    fixed = ["articleType=Kurtas", "baseColour=Teal", "gender=Women"]
    assert httpx.patch(f"{url}/items/{item['id']}", json={"attributes": fixed}).status_code == 401
    for body in ({}, {"colour": "Teal"}, {"attributes": "gender=Women"}, {"attributes": ["no token"]},
                 {"title": ""}, {"title": 5}, {"attributes": ["gender=Women"] * 65}):
        r = httpx.patch(f"{url}/items/{item['id']}", json=body, headers=h)
        assert r.status_code == 400 and "error" in r.json(), (body, r.text)
    assert cluster.coordinator_call("get", item["id"])["attributes"] == before["attributes"]
    assert httpx.patch(f"{url}/items/no-such-item", json={"title": "x"}, headers=h).status_code == 404
    # as a person writes them: the tokens are stored as the index spells them (models/taxonomy.py)
    spelt = ["category=kurta", "colour=TEAL", "Gender=women"]
    r = httpx.patch(f"{url}/items/{item['id']}", json={"attributes": spelt, "title": "Teal Kurta"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == httpx.get(f"{url}/items/{item['id']}").json()
    assert r.json()["attributes"] == fixed and r.json()["meta"]["title"] == "Teal Kurta"
    after = cluster.coordinator_call("get", item["id"])
    assert np.array_equal(after["code"], before["code"]) and np.array_equal(after["hist"], before["hist"])
    assert after["meta"]["image"] == before["meta"]["image"]
    listed = httpx.get(url + "/items", params={"filters": "baseColour=Teal,articleType=Kurtas"}).json()["items"]
    assert item["id"] in [it["id"] for it in listed]
    assert httpx.get(url + "/items", params={"filters": "colour=teal,category=kurtas"}).json()["items"] == listed
    r = httpx.patch(f"{url}/items/{item['id']}", json={"attributes": before["attributes"],
                                                       "title": before["meta"]["title"]}, headers=h)
    assert r.status_code == 200 and r.json()["attributes"] == before["attributes"]


def test_paging_through_the_catalog_and_exporting_it(server):
    """GET /items a page at a time, and `fashion-search export`: every item once, as GET /items/{id} has it."""
    url, cluster, tmp = server["url"], server["cluster"], server["tmp"]
    listed, cursor = [], None
    while True:
        r = httpx.get(url + "/items", params={"limit": "5", **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= 5
        listed += body["items"]
        if (cursor := body["next_cursor"]) is None:
            break
    ids = [it["id"] for it in listed]
    assert len(ids) == len(set(ids)) == cluster.stats()["items"] > 5
    for it in listed[:6]:
        assert it == httpx.get(f"{url}/items/{it['id']}").json()
    out = tmp / "export" / "catalog.jsonl"
    out.parent.mkdir()
    report = cluster.export(out, log=lambda s: None)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert report["items"] == len(lines) and [d["id"] for d in lines] == ids   # the same order
    assert all(d["meta"]["title"] == it["meta"]["title"] for d, it in zip(lines, listed))
    with pytest.raises(InvalidInput, match="exists"):
        cluster.export(out)
    carried = Counter(t for it in listed for t in it["attributes"])
    token = next(t for t, n in carried.most_common() if n < len(listed))     # some items carry it, some not
    r = httpx.get(url + "/items", params={"limit": "1000", "filters": token})
    assert r.status_code == 200 and r.json()["next_cursor"] is None
    assert [it["id"] for it in r.json()["items"]] == [it["id"] for it in listed if token in it["attributes"]]
    for params in ({"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"cursor": "nope"}, {"cursor": "99999.1"},
                   {"filters": "no token"}):
        r = httpx.get(url + "/items", params=params)
        assert r.status_code == 400 and any(w in r.text for w in ("limit", "cursor", "token")), (params, r.text)


def test_prune_uploads_removes_the_orphan_photos_and_keeps_the_recorded_ones(server):
    url, cluster, h = server["url"], server["cluster"], {"X-API-Key": KEY}
    uploads = server["tmp"] / "storage" / "uploads"
    img = jpeg((90, 10, 160))
    r = httpx.post(url + "/items", files={"image": ("p.jpg", img, "image/jpeg")},
                   data={"title": "Women Purple Top", "id": "pruned-not"}, headers=h, timeout=60)
    assert r.status_code == 201, r.text
    orphan = uploads / ("ab" * 16 + ".img")     # as a refused write leaves one
    orphan.write_bytes(b"jpeg")
    an_hour_ago = time.time() - 3700
    for p in uploads.iterdir():
        os.utime(p, (an_hour_ago, an_hour_ago))
    report = cluster.prune_uploads(3600)
    assert report["removed"] == 1 and report["orphan_names"] == [orphan.name], report
    assert report["items"] == cluster.stats()["items"] and report["items_whose_photo_is_missing"] == 0
    assert not orphan.exists() and httpx.get(url + "/items/pruned-not/image").content == img
    # the same over REST: a dry run names it and removes nothing, then it is removed
    orphan.write_bytes(b"jpeg")
    os.utime(orphan, (an_hour_ago, an_hour_ago))
    assert httpx.post(url + "/admin/prune-uploads", json={}).status_code == 401
    for body in (b"[]", b'{"dry_run": "yes"}', b'{"min_age_hours": -1}', b'{"min_age_hours": true}', b'{"x": 1}'):
        r = httpx.post(url + "/admin/prune-uploads", content=body, headers=h)
        assert r.status_code == 400 and "error" in r.json(), body
    dry = httpx.post(url + "/admin/prune-uploads", json={"dry_run": True}, headers=h, timeout=60).json()
    assert dry["orphans"] == 1 and dry["removed"] == 0 and orphan.exists()
    young = httpx.post(url + "/admin/prune-uploads", json={"min_age_hours": 2}, headers=h, timeout=60).json()
    assert young["orphans"] == 0 and orphan.exists()                 # an hour old: not old enough for 2
    done = httpx.post(url + "/admin/prune-uploads", json={}, headers=h, timeout=60).json()
    assert done["removed"] == 1 and done["orphan_names"] == [orphan.name] and done["items"] == report["items"]
    assert not orphan.exists() and httpx.get(url + "/items/pruned-not/image").content == img
    assert httpx.delete(url + "/items/pruned-not", headers=h).status_code == 200


def exported(metrics_url: str, name: str, **tags) -> float:
    """The sum of a Ray-exported metric's samples that carry these tags (0 when none yet)."""
    total = 0.0
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in tags.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_searches_and_writes_are_counted_for_prometheus(server):
    """cluster/metrics.py through Ray's metrics agent: what an operator's Prometheus would scrape."""
    import time
    url, h = server["url"], {"X-API-Key": KEY}
    for _ in range(2):
        assert search(url, {"box": "10,10,60,80", "k": "3"}).status_code == 200     # option 3
    files = {"image": ("x.jpg", jpeg(), "image/jpeg")}
    assert httpx.post(url + "/items", files=files, data={"title": "Men Blue Shirt", "id": "metered"},
                      headers=h, timeout=60).status_code == 201
    assert httpx.delete(url + "/items/metered", headers=h).status_code == 200
    deadline = time.monotonic() + 90       # the agent exports every few seconds
    while time.monotonic() < deadline:
        counts = (exported(server["metrics"], "ray_fashion_search_queries", option="3", partial="false"),
                  exported(server["metrics"], "ray_fashion_search_stage_ms_count", stage="total"),
                  exported(server["metrics"], "ray_fashion_search_items_written", op="delete"))
        if counts[0] >= 2 and counts[2] >= 1:
            break
        time.sleep(2)
    assert counts[0] >= 2 and counts[1] >= 2 and counts[2] >= 1, counts


def test_a_killed_model_replica_gives_503_then_recovers(server):
    import time
    url = server["url"]
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if "FeatureReplica" in a["name"] and a["namespace"] == "serve"]
    assert replicas
    ray.kill(ray.get_actor(replicas[0]["name"], namespace="serve"), no_restart=False)
    statuses, deadline = [], time.monotonic() + 90
    while time.monotonic() < deadline:
        r = search(url, {"k": "3"})
        statuses.append(r.status_code)
        if r.status_code == 200:
            break
        assert r.status_code == 503 and r.headers.get("retry-after"), r.text
        time.sleep(0.5)
    assert statuses[-1] == 200, statuses


def test_batch_stats_and_docs(server):
    url = server["url"]
    files = [("image", ("a.jpg", jpeg(), "image/jpeg")), ("image", ("b.jpg", jpeg((0, 0, 250)), "image/jpeg"))]
    r = httpx.post(url + "/search/batch", files=files, data={"k": "3"}, timeout=60)
    assert r.status_code == 200 and len(r.json()["queries"]) == 2
    # options 2 and 3 per image: the second image names a category, the first draws a box
    data = {"k": "3", "category": ["", "t-shirt"], "box": ["30,40,60,80", ""]}
    r = httpx.post(url + "/search/batch", files=files, data=data, timeout=60)
    assert r.status_code == 200, r.text
    first, second = r.json()["queries"]
    assert first["roi_source"] == "user" and first["roi"] == [30, 40, 60, 80] and first["category_source"] == "auto"
    assert second["category"] == "Tshirts" and second["category_source"] == "user" and second["roi_source"] != "user"
    # roi=match for every image without a box (the tiny models have no detector: the whole photo wins)
    r = httpx.post(url + "/search/batch", files=files, data={"k": "3", "roi": "match", "box": ["30,40,60,80", ""]},
                   timeout=60)
    assert r.status_code == 200, r.text
    assert [q["roi_source"] for q in r.json()["queries"]] == ["user", "whole image"]
    # a hard filter for every image: a token an indexed item carries (the tiny models read at random)
    some_id = sorted((server["tmp"] / "catalog" / "images").glob("*.jpg"))[1].stem
    token = httpx.get(url + f"/items/{some_id}").json()["attributes"][0]
    r = httpx.post(url + "/search/batch", files=files, data={"k": "5", "filters": token}, timeout=60)
    assert r.status_code == 200 and all(q["results"] for q in r.json()["queries"]), r.text
    assert all(token in h["matched"] for q in r.json()["queries"] for h in q["results"])
    assert all(q["warnings"] == [] for q in r.json()["queries"])
    field, value = token.split("=", 1)          # the same token as a person types it: the same answers
    spelt = httpx.post(url + "/search/batch", files=files, timeout=60,
                       data={"k": "5", "filters": f"{field.lower()}={value.upper()}"})
    assert [[h["id"] for h in q["results"]] for q in spelt.json()["queries"]] == \
        [[h["id"] for h in q["results"]] for q in r.json()["queries"]]
    # a filter nothing carries: no hits, and the answer says why instead of only listing what it relaxed
    r = httpx.post(url + "/search/batch", files=files, data={"k": "5", "filters": "gender=Nobody"}, timeout=60)
    assert r.status_code == 200 and all(not q["results"] for q in r.json()["queries"]), r.text
    assert all("no catalog item carries every filter (gender=Nobody)" in q["warnings"][0]
               for q in r.json()["queries"])
    for bad, says in (({"box": ["30,40,60,80"]}, "give one box per image"),
                      ({"filters": "not a token"}, "field=value"),
                      ({"roi": "telepathy"}, "roi is one of"),
                      ({"category": ["Tshirts", "", ""]}, "give one category per image"),
                      ({"box": ["1,2,3", ""]}, "image 0 (a.jpg): box is"),
                      ({"box": ["", "0,0,5000,10"]}, "image 1 (b.jpg): box (0.0, 0.0, 5000.0, 10.0) runs outside"),
                      ({"category": ["", "Spaceships"]}, "image 1 (b.jpg): unknown category")):
        r = httpx.post(url + "/search/batch", files=files, data={"k": "3", **bad}, timeout=60)
        assert r.status_code == 400 and says in r.json()["error"], r.text
    broken = files[:1] + [("image", ("c.jpg", b"not a photo", "image/jpeg"))]
    r = httpx.post(url + "/search/batch", files=broken, data={"k": "3"}, timeout=60)
    assert r.status_code == 400 and r.json()["error"].startswith("image 1 (c.jpg): not a readable image"), r.text
    st = httpx.get(url + "/stats").json()
    assert st["items"] >= 23 and len(st["shards"]) == 2
    assert httpx.get(url + "/openapi.json").json()["paths"]["/search"]
    assert httpx.get(url + "/docs").status_code == 200


def test_cli_query_against_the_server(server, tmp_path):
    img = tmp_path / "q.jpg"
    img.write_bytes(jpeg())
    out = subprocess.run([sys.executable, "-m", "cluster.cli", "query", str(img), "--url", server["url"], "--json",
                          "--k", "3"], capture_output=True, text=True, cwd=PROJECT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["results"]) == 3


def browse_to_the_end(page):
    """Click the page's "More" until it goes: the ids shown, and how many pages that took."""
    pages = 1
    while page.locator("#more").is_visible():
        n = page.locator(".hit").count()
        page.click("#more")
        page.wait_for_function(f"document.querySelectorAll('.hit').length > {n}")
        pages += 1
    assert "all of them" in page.locator("#status").inner_text()
    return page.locator("a.similar").evaluate_all("els => els.map((e) => e.dataset.id)"), pages


def test_web_page_in_chromium(server, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Chromium is not installed (.ci/run installs Debian's chromium)")
    from playwright.sync_api import sync_playwright
    img = tmp_path / "q.jpg"
    img.write_bytes(jpeg())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        page = browser.new_page()
        page.goto(server["url"] + "/")
        page.wait_for_selector("#samples img")
        page.wait_for_function("document.getElementById('health').textContent !== ''")
        assert page.locator("#health").inner_text() == "2 of 2 shards answering"
        page.set_input_files("#file", str(img))
        page.wait_for_selector("#canvas", state="visible")
        box = page.locator("#canvas").bounding_box()
        page.mouse.move(box["x"] + 10, box["y"] + 10)
        page.mouse.down()
        page.mouse.move(box["x"] + 80, box["y"] + 100)
        page.mouse.up()
        assert page.locator("input[value=box]").is_checked()
        page.click("#go")
        page.wait_for_selector(".hit", timeout=60_000)
        assert page.locator(".hit").count() > 0
        assert page.locator(".hit img").first.get_attribute("src").endswith("/image?max_side=320")   # tiles
        assert page.locator("#tags span").count() > 0
        # the photo's reading in the items' tag order: what it is first, the taxonomy's "other" left out
        fields = page.locator("#tags span").evaluate_all("els => els.map((e) => e.dataset.field)")
        order = ["articleType", "gender", "baseColour", "usage", "season", "subCategory", "masterCategory"]
        assert fields == sorted(fields, key=order.index) and "#other" not in page.locator("#tags").inner_text()
        assert "ROI from user" in page.locator("#status").inner_text()
        page.screenshot(path=str(tmp_path / "page.png"))
        # a hit's "similar items": the grid shows items like it, itself left out
        first = page.locator("a.similar").first
        item_id, title = first.get_attribute("data-id"), first.get_attribute("data-title")
        first.click()
        page.wait_for_function("/^\\d+ items like /.test(document.getElementById('status').textContent)")
        assert f" items like {title}" in page.locator("#status").inner_text()
        shown = page.locator("a.similar").evaluate_all("els => els.map((e) => e.dataset.id)")
        assert shown and item_id not in shown
        # the catalog a page at a time: "More" until every item is on the page, each once
        page.click("#browse")
        page.wait_for_function("/^the catalog: /.test(document.getElementById('status').textContent)")
        shown, pages = browse_to_the_end(page)
        listed = {str(it["id"]) for it in server["cluster"].coordinator_call("list_items", None, 1000)["items"]}
        assert len(shown) == len(set(shown)) and set(shown) == listed
        assert pages == -(-len(listed) // 20) >= 2          # 20 a page
        # with a category chosen, only its items: one item is given a category no other carries
        every = server["cluster"].coordinator_call("list_items", None, 1000)["items"]
        carried = Counter(t for it in every for t in it["attributes"] if t.startswith("articleType="))
        options = page.locator("#category option").evaluate_all("els => els.filter((e) => e.value).map((e) => e.value)")
        category = next(c for c in options if f"articleType={c}" not in carried)
        one = every[3]
        # its tokens as a shopper reads them: a field's two values as one tag, a value two fields
        # share once, the taxonomy's "other" left out, the telling fields first
        r = httpx.patch(f"{server['url']}/items/{one['id']}", headers={"X-API-Key": KEY},
                        json={"attributes": ["masterCategory=Apparel", "season=Summer", "season=Fall",
                                             "baseColour=other", "gender=Men", f"subCategory={category}",
                                             f"articleType={category}"]})
        assert r.status_code == 200, r.text
        page.select_option("#category", category)
        page.click("#browse")
        page.wait_for_function(f"document.getElementById('status').textContent.startsWith('the catalog, {category}:')")
        shown, _ = browse_to_the_end(page)
        of_category = server["cluster"].coordinator_call("list_items", None, 1000, (f"articleType={category}",))
        assert shown == [str(it["id"]) for it in of_category["items"]] == [str(one["id"])]
        assert page.locator(".hit .m").inner_text() == f"#{category} #Men #Fall/Summer #Apparel"
        assert httpx.patch(f"{server['url']}/items/{one['id']}", headers={"X-API-Key": KEY},
                           json={"attributes": one["attributes"]}).status_code == 200
        page.locator("a.similar").last.click()
        page.wait_for_function("/^\\d+ items like /.test(document.getElementById('status').textContent)")
        assert not page.locator("#more").is_visible()
        # a photo this browser cannot show (HEIC: Safari alone shows it) is still searched, without a box
        page.set_input_files("#file", str(Path(__file__).parents[1] / "models" / "photos" / "two_halves.heic"))
        page.wait_for_function("document.getElementById('status').textContent.startsWith('This browser cannot')")
        assert not page.locator("#canvas").is_visible()
        page.check("input[value=auto]")
        page.click("#go")
        page.wait_for_function("/^\\d+ results in /.test(document.getElementById('status').textContent)")
        assert page.locator(".hit").count() > 0
        # how the page shows a degraded cluster (the body as cluster/health.py makes it)
        degraded = {"status": "degraded", "shards": 2, "answering": 1, "coordinator": "ok",
                    "unavailable": {"shard-001": "its actor is not running"}}
        other = browser.new_page()
        other.route("**/health", lambda route: route.fulfill(status=200, content_type="application/json",
                                                             body=json.dumps(degraded)))
        other.goto(server["url"] + "/")
        other.wait_for_function("document.getElementById('health').textContent !== ''")
        assert other.locator("#health").inner_text() == (
            "DEGRADED: 1 of 2 shards answering; missing shard-001 (its actor is not running)")
        browser.close()


def test_web_page_on_a_phone_draws_the_box_by_touch_on_an_upright_photo(server, tmp_path):
    """A phone's screen (narrow: the canvas shown smaller than its pixels), a finger (touch events
    only), and a big portrait photo stored sideways with an EXIF orientation, as phones take them:
    the page sends an upright copy of at most 1600 pixels a side, and the box in its pixels."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Chromium is not installed (.ci/run installs Debian's chromium)")
    from playwright.sync_api import sync_playwright
    shown = np.zeros((3200, 2400, 3), np.uint8)         # 2400 wide, 3200 high, as the phone shows it
    shown[:] = (200, 30, 30)
    shown[1800:3000, 400:2000] = (20, 20, 200)
    shown = (shown + np.random.default_rng(5).integers(0, 30, shown.shape)).astype(np.uint8)   # a photo's grain
    exif = Image.Exif()
    exif[0x0112] = 6                                    # stored turned a quarter: "turn clockwise to show"
    photo = tmp_path / "phone.jpg"
    Image.fromarray(np.ascontiguousarray(np.rot90(shown))).save(photo, format="JPEG", quality=95, exif=exif)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        phone = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=2,
                                    is_mobile=True, has_touch=True)
        page = phone.new_page()
        page.goto(server["url"] + "/")
        page.wait_for_selector("#samples img")
        assert photo.stat().st_size > 1_000_000
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#canvas", state="visible")
        assert page.evaluate("[img.naturalWidth, img.naturalHeight]") == [1200, 1600]   # upright, shrunk
        shown_at = page.evaluate("(() => { const c = $('canvas'), r = c.getBoundingClientRect(); return {"
                                 "x: r.left + c.clientLeft, y: r.top + c.clientTop, width: c.clientWidth, "
                                 "height: c.clientHeight, pixels: c.width}; })()")     # inside its border
        canvas = page.locator("#canvas").bounding_box()
        assert canvas["x"] + canvas["width"] <= 360 and 300 < shown_at["width"] < shown_at["pixels"]
        grid = page.locator("#grid").bounding_box()
        assert grid["y"] > canvas["y"] + canvas["height"] and grid["width"] > 300   # below the photo, the screen wide
        fingers = phone.new_cdp_session(page)
        # whole pixels of the page: Chromium rounds a touch point's position
        x0, y0 = round(shown_at["x"] + 0.15 * shown_at["width"]), round(shown_at["y"] + 0.55 * shown_at["height"])
        x1, y1 = round(shown_at["x"] + 0.85 * shown_at["width"]), round(shown_at["y"] + 0.95 * shown_at["height"])
        # a finger's drag, timed by the events' own clocks: ten steps, then held still before it lifts
        # (lifted while moving it would fling, and the next tap would only stop the fling)
        t = time.time()
        path = [("touchStart", x0, y0, 0.0)] + [
            ("touchMove", x0 + (x1 - x0) * i // 10, y0 + (y1 - y0) * i // 10, 0.02 * i) for i in range(1, 11)]
        for kind, x, y, at in path + [("touchMove", x1, y1, 0.5)]:
            fingers.send("Input.dispatchTouchEvent",
                         {"type": kind, "touchPoints": [{"x": x, "y": y}], "timestamp": t + at})
        fingers.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": [], "timestamp": t + 0.51})
        assert page.locator("input[value=box]").is_checked()
        with page.expect_response("**/search") as answered:
            page.tap("#go")
        answer = answered.value.json()
        assert answered.value.status == 200, answer
        sent_bytes = base64.b64decode(page.evaluate(     # the photo the page sent
            "new Promise((done) => { const r = new FileReader(); r.onload = () => done(r.result.split(',')[1]); "
            "r.readAsDataURL(blob); })"))
        assert len(sent_bytes) < photo.stat().st_size / 4
        with Image.open(io.BytesIO(sent_bytes)) as sent:
            assert sent.size == (1200, 1600) and sent.getexif().get(0x0112, 1) == 1
            patch = np.asarray(sent.convert("RGB"))[1300:1400, 500:600].reshape(-1, 3).mean(axis=0)
            assert patch.tolist() == pytest.approx([35, 35, 215], abs=8)          # the blue part, upright
        scale = 1200 / shown_at["width"]                # photo pixels per pixel of the page
        drawn = [(x0 - shown_at["x"]) * scale, (y0 - shown_at["y"]) * scale, (x1 - x0) * scale, (y1 - y0) * scale]
        assert answer["roi_source"] == "user"
        assert all(abs(a - b) <= 1 for a, b in zip(answer["roi"], drawn)), (answer["roi"], drawn)
        page.wait_for_selector(".hit")
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        # a shop's cutout: a big PNG whose backdrop is transparent (stored black) goes as a JPEG on white
        cutout = np.zeros((2000, 2000, 4), np.uint8)
        cutout[500:1500, 600:1400] = (20, 20, 200, 255)
        Image.fromarray(cutout, "RGBA").save(tmp_path / "cutout.png")
        page.set_input_files("#file", str(tmp_path / "cutout.png"))
        page.wait_for_function("img && img.naturalWidth === 1600")
        sent_bytes = base64.b64decode(page.evaluate(
            "new Promise((done) => { const r = new FileReader(); r.onload = () => done(r.result.split(',')[1]); "
            "r.readAsDataURL(blob); })"))
        with Image.open(io.BytesIO(sent_bytes)) as sent:
            x = np.asarray(sent.convert("RGB")).astype(int)
        assert sent.format == "JPEG" and (x[:300] >= 250).all() and abs(x[800, 800] - (20, 20, 200)).max() <= 8
        browser.close()


def test_openapi_fuzzing_finds_no_server_errors_or_schema_violations(server):
    """schemathesis against /openapi.json: no 5xx, every status and body as documented."""
    st = Path(sys.executable).parent / "schemathesis"
    out = subprocess.run([str(st), "run", server["url"] + "/openapi.json", "--checks",
                          "not_a_server_error,status_code_conformance,content_type_conformance,"
                          "response_schema_conformance", "--max-examples", "15", "--phases", "examples,fuzzing",
                          "--generation-deterministic",
                          "--request-timeout", "60"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_a_batch_job_runs_from_here_where_the_cluster_has_no_job_api(server, monkeypatch, capsys):
    """`demo` starts Ray without a dashboard, so `batch --address` there cannot submit a job: the
    batch runs from this process, attached to that cluster, and says so. (Submission refused by a
    stand-in; the test above submits to the real job API.)"""
    from cluster import batch
    from cluster.cli import build_parser, cmd_batch

    def no_job_api(address, argv):
        raise ConnectionError("Failed to connect to Ray at address: http://127.0.0.1:8265.")
    monkeypatch.setattr(batch, "submit_job", no_job_api)
    tmp = server["tmp"]
    # this process imported models.data before the fixture named the tiny models: the record check reads this
    monkeypatch.setattr("models.data.ASSETS", tmp / "assets")
    photo = sorted((tmp / "catalog" / "images").glob("*.jpg"))[1]
    (tmp / "no-api").mkdir()
    queries, out = tmp / "no-api" / "queries.csv", tmp / "no-api" / "results.jsonl"
    queries.write_text(f"image,ref\n{photo},r0\n")
    args = build_parser().parse_args(["batch", str(queries), "--out", str(out), "--k", "3", "--address",
                                      ray.get_runtime_context().gcs_address, "--storage", str(tmp / "storage")])
    report = cmd_batch(args)
    assert report["answered"] == 1 and "has no job API" in capsys.readouterr().err
    [line] = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["query"]["ref"] == "r0" and 1 <= len(line["results"]) <= 3
    args = build_parser().parse_args(["batch", str(tmp / "elsewhere.csv"), "--out", str(out), "--address",
                                      ray.get_runtime_context().gcs_address, "--storage", str(tmp / "storage")])
    with pytest.raises(InvalidInput, match="the queries file is not on this machine"):
        cmd_batch(args)


def test_a_batch_job_answers_every_good_query_and_reports_the_bad_ones(server):
    """`fashion-search batch`: a CSV of photos in, one JSON line per query out, in order."""

    from cluster.batch import read_queries, run_batch
    tmp = server["tmp"]
    photos = sorted((tmp / "catalog" / "images").glob("*.jpg"))[1:4]      # the first one is broken
    (tmp / "q").mkdir(exist_ok=True)
    queries = tmp / "q" / "queries.csv"
    missing = tmp / "catalog" / "images" / "missing.jpg"
    queries.write_text("image,category,box\n"
                       f"{photos[0]},,\n"
                       f"{missing},,\n"
                       f"{photos[1]},Tshirts,\n"
                       f"{photos[2]},,\"5,5,40,40\"\n")
    out = tmp / "q" / "results.jsonl"
    report = run_batch(server["cluster"], read_queries(str(queries)), str(out), k=5, concurrency=1, log=lambda s: None)
    assert report["queries"] == 4 and report["answered"] == 3 and report["errors"] == 1
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["query"]["image"] for d in lines] == [str(p) for p in (photos[0], missing, photos[1], photos[2])]
    answers = [d for d in lines if "error" not in d]
    assert len(lines) == 4 and len(answers) == 3
    for d in answers:
        assert 1 <= len(d["results"]) <= 5
        assert isinstance(d["relaxed"], list) and isinstance(d["widened"], list)
        assert [h["score"] for h in d["results"]] == sorted(h["score"] for h in d["results"])
    assert answers[1]["category"] == "Tshirts"
    assert answers[2]["roi"] == [5, 5, 40, 40]
    assert "missing.jpg" in next(d for d in lines if "error" in d)["query"]["image"]


def test_a_batch_jobs_rows_carry_their_own_filters(server):
    """A row's `filters` are hard, as on /search: its hits all carry them, a filter nothing carries
    leaves none and says so, and a malformed one is that row's own error line."""
    from cluster.batch import read_queries, run_batch
    tmp = server["tmp"]
    photos = sorted((tmp / "catalog" / "images").glob("*.jpg"))[1:3]
    token = server["cluster"].get(id_of(photos[0]))["attributes"][0]
    field, value = token.split("=", 1)
    (tmp / "qf").mkdir(exist_ok=True)
    queries = tmp / "qf" / "queries.jsonl"
    queries.write_text("".join(json.dumps(q) + "\n" for q in (
        {"image": str(photos[0]), "filters": f"{field.lower()}={value.upper()}"},   # as a person types it
        {"image": str(photos[1]), "filters": ["gender=Nobody"]},
        {"image": str(photos[1]), "filters": "not a token"},
        {"image": str(photos[1])})))
    out = tmp / "qf" / "results.jsonl"
    report = run_batch(server["cluster"], read_queries(str(queries)), str(out), k=5, concurrency=1, log=lambda s: None)
    assert report["answered"] == 3 and report["errors"] == 1
    first, nobody, bad, plain = [json.loads(x) for x in out.read_text().splitlines()]
    assert first["filters"] == [token] and first["results"] and first["warnings"] == []
    assert all(token in h["matched"] for h in first["results"])
    assert nobody["results"] == [] and "no catalog item carries every filter (gender=Nobody)" in nobody["warnings"][0]
    assert "field=value" in bad["error"]
    assert plain["filters"] == [] and plain["results"]


def test_a_batch_jobs_photos_may_be_urls(server):
    """Query photos on a web server (a real one on this machine): each fetched and read, in
    order, as the same photo from a file is; one that cannot be fetched is its own error line."""
    from cluster.batch import read_queries, run_batch

    from .photo_server import photo_server
    tmp = server["tmp"]
    photos = sorted((tmp / "catalog" / "images").glob("*.jpg"))[1:4]
    (tmp / "qu").mkdir(exist_ok=True)
    with photo_server({p.name: p.read_bytes() for p in photos}) as (url, asked):
        rows = [{"image": f"{url}/{p.name}"} for p in photos] + [{"image": f"{url}/gone.jpg"}]
        rows += [{"image": str(photos[0])}]          # the same photo as a file
        queries = tmp / "qu" / "queries.jsonl"
        queries.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out = tmp / "qu" / "results.jsonl"
        report = run_batch(server["cluster"], read_queries(str(queries)), str(out), k=5, concurrency=1,
                           log=lambda s: None)
    assert (report["answered"], report["errors"]) == (4, 1) and len(asked) == 4
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["query"]["image"] for x in lines[:4]] == [r["image"] for r in rows[:4]]
    assert all(x["results"] for x in lines[:3]) and "HTTP 404" in lines[3]["error"]
    assert lines[0]["results"] == lines[4]["results"]       # fetched or read from disk: the same answer


def id_of(photo: Path):
    from shards.codes import id_from_text
    return id_from_text(photo.stem)


def test_an_interrupted_batch_job_resumes_where_it_stopped(server):
    """Ctrl-C mid-job keeps every whole answer written; --resume searches only the rest."""

    from cluster.batch import read_queries, run_batch
    tmp = server["tmp"]
    photos = sorted((tmp / "catalog" / "images").glob("*.jpg"))[1:6]
    (tmp / "resume").mkdir(exist_ok=True)
    queries = tmp / "resume" / "queries.csv"
    queries.write_text("image\n" + "".join(f"{p}\n" for p in photos))
    rows = read_queries(str(queries))
    out = tmp / "resume" / "results.jsonl"
    chunks = []

    def interrupt_after_the_first_chunk(line):
        chunks.append(line)
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_batch(server["cluster"], rows, str(out), k=3, batch=2, concurrency=1, log=interrupt_after_the_first_chunk)
    kept = out.read_text()
    assert [json.loads(x)["query"] for x in kept.splitlines()] == rows[:2]
    with open(out, "a") as f:
        f.write('{"query": {"image": "')                 # and a line cut short, as a crash leaves one
    searched = []
    report = run_batch(server["cluster"], rows, str(out), k=3, batch=2, concurrency=1, log=searched.append, resume=True)
    assert report["already_answered"] == 2 and report["answered"] + report["errors"] == 3
    text = out.read_text()
    assert text.startswith(kept)                          # the kept answers are untouched
    lines = [json.loads(x) for x in text.splitlines()]
    assert [d["query"] for d in lines] == rows            # every query once, in order
    assert all(1 <= len(d["results"]) <= 3 for d in lines)
    assert searched[0].startswith("2 of 5 queries already answered")
    # without --resume the file is written anew
    run_batch(server["cluster"], rows[:1], str(out), k=3, concurrency=1, log=lambda s: None)
    assert [json.loads(x)["query"] for x in out.read_text().splitlines()] == rows[:1]
