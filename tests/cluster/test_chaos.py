"""`fashion-search chaos` end to end (tiny untrained models): a 3-node Ray cluster, the REST
daemon, a client adding, deleting and searching while every fault of the script hits but the
last, the whole cluster's restart (50 s of CI's time: test_restart and test_stop restart a
cluster on its storage root; `fashion-search chaos` runs it, RELIABILITY.md)."""
import os

import pytest

from cluster.chaos import ALLOWED_OUTCOMES, RESTART, run_chaos
from shards.errors import InvalidInput

from .tiny_assets import make_tiny_assets


def test_chaos_run_loses_nothing(tmp_path):
    assets = make_tiny_assets(tmp_path / "assets")
    old = os.environ.get("FASHION_ASSETS")
    os.environ["FASHION_ASSETS"] = str(assets)
    try:
        with pytest.raises(InvalidInput, match="no such fault"):    # refused before anything starts
            run_chaos(tmp_path / "storage", skip=("kill the shards",), log=lambda s: None)
        report = run_chaos(tmp_path / "storage", settle_s=1.0, warmup_s=3.0, log=lambda s: None, skip=(RESTART,))
    finally:
        if old is None:
            os.environ.pop("FASHION_ASSETS", None)
        else:
            os.environ["FASHION_ASSETS"] = old
    steps = {s["fault"]: s for s in report["steps"]}
    assert RESTART not in steps
    assert len(steps) == 7 and report["faults_survived"] == 7, [s for s in report["steps"] if not s["survived"]]
    gave_up = steps["clients hang up mid-request"]
    assert gave_up["given_up"] > 0 and gave_up["unreadable_after"] == 0, gave_up
    assert report["items_lost"] == 0 and report["duplicates"] == 0
    assert report["wrong_complete_answers"] == 0, report["wrong"]
    assert set(report["client_outcomes"]) <= ALLOWED_OUTCOMES, report["client_errors"]
    assert report["ok"]
    # the client really wrote and read throughout, and the last check saw its writes
    assert report["client_outcomes"]["add ok"] >= 20 and report["client_outcomes"]["delete ok"] >= 5
    final = report["steps"][-1]["check"]
    assert final["found"] == final["acknowledged"] == final["stats_items"] == final["listed"] > 0
    assert not any(s["check"]["listing_wrong"] for s in report["steps"])
    assert all(s["check"]["lost"] == 0 and s["check"]["deleted_came_back"] == 0 for s in report["steps"])
