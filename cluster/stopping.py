"""SIGTERM stops a command the way Ctrl-C does.

`docker stop`, `systemctl stop` and `kill` send SIGTERM. Ray's driver installs its own
handler for it when it connects (a stack dump, then death), which skips every clean
stop: the storage root stays claimed (cluster/ownership.py) until its heartbeat goes
stale, so a restarted container or service is refused for that long. Installed after
Ray connects, this handler raises `Terminated` in the main thread instead; it is a
KeyboardInterrupt, so every path that cleans up after Ctrl-C runs for it too.
"""
from __future__ import annotations

import signal
import threading


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM)."""


def _raise_terminated(signum, frame):
    raise Terminated()


def stop_on_sigterm() -> None:
    """From now on SIGTERM raises Terminated in the main thread (call it after Ray connects)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
