"""`fashion-search serve` stopped the way docker and systemd stop it (SIGTERM): a clean stop
that gives the storage root up, so the service started again at once is not refused."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cluster.ownership import OWNER
from coordinator.placement import Placement

from .test_rest import free_port
from .tiny_assets import make_tiny_assets

PROJECT = Path(__file__).resolve().parents[2]


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from cluster.cli import main; sys.exit(main(sys.argv[1:]))", *argv]


def wait_for(proc, path: Path, says: str, timeout_s: float = 240) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = path.read_text()
        if says in text:
            return text
        assert proc.poll() is None, f"it stopped before {says!r}:\n{text[-3000:]}"
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"no {says!r} within {timeout_s} s:\n{path.read_text()[-3000:]}")


def test_sigterm_stops_serve_cleanly_and_a_restart_is_not_refused(tmp_path):
    env = {**os.environ, "FASHION_ASSETS": str(make_tiny_assets(tmp_path / "assets")), "PYTHONPATH": str(PROJECT)}
    storage = tmp_path / "storage"
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cli("serve", "--storage", str(storage), "--port", str(free_port()), "--shards", "2"),
                                cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # a new root is said to be one: a mistyped --storage must not pass for the catalog
        wait_for(proc, log, f"serving a new, empty catalog at {storage.resolve()}")
        assert (storage / OWNER).exists()          # the running cluster claims its root
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "SIGTERM received" not in text and "Traceback" not in text, text[-3000:]   # no crash dump
    assert not (storage / OWNER).exists()          # given up at once, not 15 s later
    # started again at once (a restarted container or service): the root is free, and it serves
    # the catalog it found, not a new one
    with open(log, "w") as out:
        proc = subprocess.Popen(cli("serve", "--storage", str(storage), "--port", str(free_port())),
                                cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(proc, log, f"serving 0 items from {storage.resolve()} on http://")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sorted(Placement.load(storage).shards) == ["shard-000", "shard-001"]   # the two it was made with

