"""Which Ray cluster serves a storage root, so that a second one does not open it too.

Nothing else stops two Ray clusters (a command run without `--address`, say, which
starts a local Ray) from opening the same shard directories and writing over each
other's logs. The coordinator actor keeps a heartbeat in `owner.json` at the root,
naming its Ray cluster by GCS address; `open_cluster` refuses a root whose heartbeat
names another cluster and is fresh. A cluster that stops cleanly (`shutdown_cluster`,
or a command closing the Ray it started) removes the file; one that crashed stops
beating, and after `STALE_S` the root is free. Sooner if its head was this machine:
when nothing listens at its GCS address any more, that cluster is gone. A record that
looks stale is read again `CONFIRM_S` later and counts only if it did not change, so a
live cluster whose clock runs behind is not taken for a dead one.

This is a guard against mistakes, not a distributed lock: two clusters opening one
root within the same second can both pass.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from shards.errors import InvalidInput

OWNER = "owner.json"
HEARTBEAT_S = 2.0
STALE_S = 15.0
CONFIRM_S = 1.5 * HEARTBEAT_S   # a record that looks stale is read again after this long


def read_owner(root: str | os.PathLike) -> dict | None:
    """The root's heartbeat record, or None (none yet, or unreadable: a write caught half-way)."""
    try:
        d = json.loads((Path(root) / OWNER).read_text())
    except (OSError, ValueError):
        return None
    ok = (isinstance(d, dict) and isinstance(d.get("ray"), str) and isinstance(d.get("time"), (int, float))
          and not isinstance(d["time"], bool))
    return d if ok else None


def check_free(root: str | os.PathLike, me: str, now: float | None = None) -> None:
    """Raise InvalidInput if another Ray cluster's heartbeat at `root` is fresh; `me` is this cluster's GCS address."""
    owner = read_owner(root)
    if owner is None or owner["ray"] == me:
        return
    age = (time.time() if now is None else now) - owner["time"]
    if age >= STALE_S:
        # An old time may also be a live cluster whose clock runs behind this one's: a live
        # one rewrites the record within HEARTBEAT_S, so look again before taking the root.
        time.sleep(CONFIRM_S)
        again = read_owner(root)
        if again is None or again == owner or again["ray"] == me:
            return
        owner, age = again, 0.0
    if not gone_from_here(owner["ray"]):
        raise InvalidInput(
            f"storage root {root} is served by the Ray cluster at {owner['ray']} (coordinator on "
            f"{owner.get('host', '?')}, last heartbeat {max(age, 0):.0f} s ago); pass --address {owner['ray']} "
            f"to use that cluster. If it is gone, the root is free {STALE_S:.0f} s after its last heartbeat "
            f"(at once if that cluster's head was this machine).")


def gone_from_here(address: str, timeout_s: float = 0.5) -> bool:
    """Whether the Ray cluster at `address` certainly stopped: its GCS address is one of this
    machine's, and the port refuses connections.

    Only a local address is asked: a refusal from another machine may come from a
    firewall, and a timeout proves nothing, so both count as "maybe alive".
    """
    host, _, port = address.rpartition(":")
    try:
        port = int(port)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))             # succeeds only for an address of this machine
    except (OSError, ValueError, OverflowError):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


class Heartbeat:
    """A daemon thread that rewrites `owner.json` every HEARTBEAT_S (atomically: a temporary file, then rename)."""

    def __init__(self, root: str | os.PathLike, me: str):
        self.path, self.me = Path(root) / OWNER, me
        self._stop = threading.Event()
        self._beat()
        self._thread = threading.Thread(target=self._run, name="owner-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        record = {"ray": self.me, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        tmp = self.path.with_name(f".{OWNER}.{os.getpid()}")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.path)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._beat()
            except OSError:
                pass   # a storage hiccup: the next beat tries again; a long outage lets the record go stale

    def release(self) -> None:
        """Stop beating and remove the record if it is still ours: the root is free at once."""
        self._stop.set()
        self._thread.join(timeout=5)
        release_record(self.path.parent, self.me)


def release_record(root: str | os.PathLike, me: str) -> None:
    """Remove the root's record if it still names the Ray cluster `me`, leaving another cluster's alone."""
    owner = read_owner(root)
    if owner is not None and owner["ray"] == me:
        (Path(root) / OWNER).unlink(missing_ok=True)
