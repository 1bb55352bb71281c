"""The command line's errors: a mistyped storage root or shard count, or no server to query, is a clear
error (exit 2), and nothing starts."""
import os
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import ray

from cluster.cli import main
from coordinator.placement import Placement, check_shard_count
from shards.errors import InvalidInput


@pytest.mark.parametrize("argv", [["stats"], ["rebalance", "--shards", "3"], ["batch", "QUERIES", "--out", "OUT"]])
def test_a_command_on_a_root_without_a_cluster_creates_none(tmp_path, capsys, argv):
    root = tmp_path / "typo"
    (tmp_path / "q.csv").write_text("image\nphoto.jpg\n")
    argv = [{"QUERIES": str(tmp_path / "q.csv"), "OUT": str(tmp_path / "out.jsonl")}.get(a, a) for a in argv]
    assert main(argv + ["--storage", str(root)]) == 2
    assert not (tmp_path / "out.jsonl").exists()
    assert "no cluster at" in capsys.readouterr().err
    assert not root.exists() and not ray.is_initialized()


@pytest.mark.parametrize("command", [["export"], ["similar-items"], ["batch", "QUERIES"]])
def test_a_job_whose_output_folder_is_missing_is_refused_before_ray_starts(tmp_path, capsys, command):
    Placement.initial(2).save(tmp_path)
    (tmp_path / "q.csv").write_text("image\nphoto.jpg\n")
    out = tmp_path / "no such folder" / "out.jsonl"
    argv = [str(tmp_path / "q.csv") if a == "QUERIES" else a for a in command]
    assert main(argv + ["--out", str(out), "--storage", str(tmp_path)]) == 2
    assert f"no folder {out.parent} to write out.jsonl in" in capsys.readouterr().err
    assert not out.parent.exists() and not ray.is_initialized()


@pytest.mark.parametrize("n", ["4097", "10000"])    # below 1 is a usage error (further down)
def test_a_bad_shard_count_is_refused_before_ray_starts(tmp_path, capsys, n):
    Placement.initial(2).save(tmp_path)
    before = (tmp_path / "placement.json").read_text()
    assert main(["rebalance", "--shards", n, "--storage", str(tmp_path)]) == 2
    assert "number of shards must be in [1, 4096]" in capsys.readouterr().err
    assert (tmp_path / "placement.json").read_text() == before and not ray.is_initialized()
    storage = tmp_path / "new"
    assert main(["index", "--catalog", str(tmp_path / "c.csv"), "--shards", n, "--storage", str(storage)]) == 2
    assert not storage.exists()


@pytest.mark.parametrize("n", [0, -1, 17, 2.0, True, "3"])
def test_check_shard_count(n):
    with pytest.raises(InvalidInput):
        check_shard_count(n, 16)
    check_shard_count(16, 16)


PHOTO = str(Path(__file__).resolve().parents[2] / "demo" / "samples" / "1349.jpg")


def test_query_with_no_server_there_is_a_clear_error(capsys):
    assert main(["query", PHOTO, "--url", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "no server answers at http://127.0.0.1:1" in err and "fashion-search demo" in err


def test_query_of_a_missing_photo_names_the_photo_not_the_server(capsys):
    assert main(["query", "/nonexistent/photo.jpg", "--url", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "cannot read /nonexistent/photo.jpg" in err and "127.0.0.1" not in err


@contextmanager
def http_server(status: int, body: bytes, bodies: list):
    """A server on a free local port answering every POST with `status` and `body`; what it is
    sent goes to `bodies`. Yields its URL."""
    class Answer(BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if body.startswith(b"{") else "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def test_query_against_something_that_is_not_the_api_is_a_clear_error(capsys):
    with http_server(502, b"<html>bad gateway</html>", []) as url:
        assert main(["query", PHOTO, "--url", url]) == 2
    assert "answered 502 with no JSON" in capsys.readouterr().err


def test_query_sends_the_options_it_is_given():
    bodies = []
    with http_server(200, b'{"results": []}', bodies) as url:
        assert main(["query", PHOTO, "--url", url, "--roi", "match", "--category", "Dresses", "--json"]) == 0
        assert main(["query", PHOTO, "--url", url, "--json"]) == 0
    sent, plain = bodies
    for field, value in ((b"roi", b"match"), (b"category", b"Dresses")):
        assert b'name="' + field + b'"\r\n\r\n' + value in sent
        assert b'name="' + field + b'"' not in plain
    assert Path(PHOTO).read_bytes() in sent


@pytest.mark.parametrize("command", [["demo"], ["serve", "--storage", "STORAGE"]])
def test_a_port_in_use_is_a_clear_error_before_anything_starts(tmp_path, capsys, command):
    import socket
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        argv = [str(tmp_path / "st") if a == "STORAGE" else a for a in command]
        assert main(argv + ["--port", str(port)]) == 2
    assert f"cannot serve on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err
    assert not ray.is_initialized() and not (tmp_path / "st").exists()


@pytest.mark.parametrize("argv, says", [
    (["train", "attributes", "--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["train", "text", "--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["train", "attributes", "--image-size", "7"], "argument --image-size: must be at least 32, got 7"),
    (["train", "attributes", "--lr", "-1"], "argument --lr: must be above 0.0, got -1"),
    (["train", "attributes", "--lr", "nan"], "argument --lr: must be above 0.0, got nan"),
    (["train", "attributes", "--hard", "2"], "argument --hard: must be in [0.0, 1.0], got 2"),
    (["train", "attributes", "--crop", "1"], "argument --crop: must be in [0.0, 1.0), got 1"),
    (["bench", "cluster", "--rows", "abc"], "argument --rows: not an integer: 'abc'"),
    (["bench", "filtered", "--selectivity", "0"], "argument --selectivity: must be in (0.0, 1.0], got 0"),
    (["demo", "--port", "70000"], "argument --port: must be in [1, 65535], got 70000"),
    (["rebalance", "--shards", "0"], "argument --shards: must be at least 1, got 0"),
    (["index", "--catalog", "c.csv", "--shards", "-2"], "argument --shards: must be at least 1, got -2"),
    (["query", "x.jpg", "--k", "201"], "argument --k: must be in [1, 200], got 201"),
])
def test_a_bad_number_is_a_usage_error_before_anything_runs(capsys, argv, says):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err


def test_training_on_a_gpu_where_torch_sees_none_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)    # as on a machine without one
    out = tmp_path / "run"
    assert main(["train", "attributes", "--device", "cuda", "--epochs", "1", "--out", str(out)]) == 2
    assert "--device cuda: this machine has no GPU that torch can use" in capsys.readouterr().err
    assert not out.exists()


def test_eval_measures_the_model_folder_it_is_given(tmp_path, capsys):
    """`eval instances --assets DIR` reads DIR's models (tiny ones here: no detector), not the shipped ones."""
    import json

    from .test_rest import small_catalog
    from .tiny_assets import make_tiny_assets
    assets = make_tiny_assets(tmp_path / "assets")
    catalog = small_catalog(tmp_path / "catalog", n=8)         # one photo broken: measured without it, and said
    assert main(["eval", "instances", "--data", str(catalog), "--assets", str(assets), "--limit", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["assets"] == str(assets) and report["queries"] == 3
    assert report["catalog"] == 7 and report["unreadable_images"] == 1
    assert report["detector_roi_fraction"] == 0.0       # the shipped folder has a detector; this one has none


@pytest.mark.parametrize("argv, said", [
    (["eval", "retrieval", "--weights", "features.pt"], "give --assets DIR"),
    (["eval", "attributes", "--assets", "models/assets"], "give --weights FILE"),
    (["eval", "instances", "--assets", "EMPTY"], "a model folder needs text.pt, attributes.pt, features.pt"),
    (["eval", "text", "--title-words", "1"], "--title-words is for eval attributes"),
])
def test_eval_refuses_weights_it_would_not_read(tmp_path, capsys, argv, said):
    (tmp_path / "empty").mkdir()
    argv = [str(tmp_path / "empty") if a == "EMPTY" else a for a in argv]
    assert main(argv) == 2
    assert said in capsys.readouterr().err


def test_eval_attributes_and_text_measure_any_product_folder_and_say_what_they_left_out(tmp_path, capsys):
    """Another catalog in the product format, as a user's would be: a broken photo, a repeated row."""
    import json

    import torch

    from .test_rest import small_catalog
    catalog = small_catalog(tmp_path / "catalog", n=6)              # its first photo is broken
    with open(catalog / "styles.csv", "a") as f:
        f.write((catalog / "styles.csv").read_text().splitlines()[2] + "\n")
    assert main(["eval", "attributes", "--data", str(catalog), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 5 and report["unreadable_images"] == 1 and report["repeated_ids"] == 1
    assert 0.0 <= report["precision"] <= 1.0 and 0.0 <= report["guided_precision"] <= 1.0
    assert main(["eval", "attributes", "--data", str(catalog), "--title-words", "1", "--json"]) == 0
    short = json.loads(capsys.readouterr().out)         # each title cut to its first word, as a shop's short ones
    assert short["title_words"] == 1 and short["precision"] == report["precision"]    # the photo alone: as before
    assert 0.0 <= short["title_guided_category_accuracy"] <= 1.0
    assert main(["eval", "text", "--data", str(catalog), "--json"]) == 0   # titles need no photo
    assert json.loads(capsys.readouterr().out)["images"] == 7
    assert torch.is_grad_enabled()      # an evaluation leaves the process as it found it (training may follow)


def test_serve_with_a_model_file_missing_says_which_before_serve_gives_up(tmp_path):
    """Not Serve's "Deploying application failed" after its replicas failed again and again."""
    import os
    import shutil
    import subprocess
    import sys

    from models.data import SHIPPED
    assets = tmp_path / "assets"
    assets.mkdir()
    for name in ("features.pt", "taxonomy.json"):        # no attributes.pt
        shutil.copy(Path(SHIPPED) / name, assets / name)
    project = Path(__file__).resolve().parents[2]
    env = {**os.environ, "FASHION_ASSETS": str(assets), "PYTHONPATH": str(project)}
    from .test_rest import free_port
    port = free_port()
    cli = "import sys; from cluster.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run([sys.executable, "-c", cli, "serve", "--storage", str(tmp_path / "storage"),
                          "--port", str(port)], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert f"no attribute model weights at {assets / 'attributes.pt'}" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("env, token_file, mode", [
    ({}, True, "token"),                                   # a local cluster's token: attach with it
    ({}, False, None),                                     # no token here: Ray's own default
    ({"RAY_AUTH_MODE": "disabled"}, True, "disabled"),     # the user's choice stands
    ({"RAY_AUTH_TOKEN": "abc"}, False, "token"),
])
def test_attaching_uses_token_auth_where_this_machine_has_a_token(tmp_path, env, token_file, mode):
    """In a fresh process, as the command runs (Ray reads the mode once, when it is imported)."""
    import subprocess
    import sys
    if token_file:
        (tmp_path / ".ray").mkdir()
        (tmp_path / ".ray" / "auth_token").write_text("x" * 64)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    code = ("import os; from cluster.cli import _token_auth_where_a_token_is as f; f(); "
            "print(os.environ.get('RAY_AUTH_MODE'))")
    got = subprocess.run([sys.executable, "-c", code], env={**clean, "HOME": str(tmp_path), **env},
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], check=True)
    assert got.stdout.strip() == str(mode)
