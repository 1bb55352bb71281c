"""`fashion-search export` (cluster/export.py) against in-process shards: every item once, in the
catalog's order, and a stopped export resumed (after a rebalance too) ends byte for byte as one
that was never stopped. The live cluster's export is in test_rest.py."""
import asyncio
import json

import numpy as np
import pytest

from cluster.export import export_items
from cluster.new_file import progress_file
from coordinator.listing import every_item
from shards.errors import InvalidInput

from ..coordinator.test_coordinator import make
from ..shards.helpers import random_items


def catalog(tmp_path, n=100):
    coord = make(tmp_path / "root", 3)
    ids, codes, hists, attrs = random_items(np.random.default_rng(3), n, 2, 8, str_ids=True)
    asyncio.run(coord.upsert(ids, codes, hists, attrs, [{"title": f"item {i}"} for i in ids]))
    return coord


def pages_of(coord, stop_after=None):
    """Coordinator.list_items, called synchronously; the call after `stop_after` pages is a Ctrl-C."""
    calls = []

    def list_page(cursor, limit):
        if stop_after is not None and len(calls) == stop_after:
            raise KeyboardInterrupt
        calls.append(cursor)
        return asyncio.run(coord.list_items(cursor, limit))
    return list_page


def test_every_item_once_in_the_catalogs_order(tmp_path):
    coord = catalog(tmp_path)
    out = tmp_path / "catalog.jsonl"
    report = export_items(pages_of(coord), out, log=lambda s: None, page=7)
    oracle = list(every_item(pages_of(coord), 1000))
    assert [json.loads(line) for line in out.read_text().splitlines()] == oracle and len(oracle) == 100
    assert report["items"] == 100 and report["resumed_at_item"] is None
    assert not progress_file(out).exists() and not out.with_name(out.name + ".partial").exists()
    with pytest.raises(InvalidInput, match="exists"):
        export_items(pages_of(coord), out, log=lambda s: None)


@pytest.mark.parametrize("between", ["nothing", "a torn line", "a rebalance"])
def test_a_stopped_export_resumes_to_the_same_file(tmp_path, between):
    coord = catalog(tmp_path)
    whole = tmp_path / "whole.jsonl"
    export_items(pages_of(coord), whole, log=lambda s: None, page=7)
    out = tmp_path / "catalog.jsonl"
    with pytest.raises(KeyboardInterrupt):
        export_items(pages_of(coord, stop_after=4), out, log=lambda s: None, page=7)
    partial = out.with_name(out.name + ".partial")
    assert not out.exists() and json.loads(progress_file(out).read_text())["items"] == 28
    if between == "a torn line":     # written after the last durable page, then cut by a crash
        with open(partial, "a") as f:
            f.write('{"id": "half')
    elif between == "a rebalance":   # buckets move between the runs: the cursor is a position no move changes
        asyncio.run(coord.rebalance(5))
    report = export_items(pages_of(coord), out, log=lambda s: None, resume=True, page=7)
    assert out.read_bytes() == whole.read_bytes()
    assert report["resumed_at_item"] == 28 and report["items"] == 100
    assert not progress_file(out).exists() and not partial.exists()


def test_resume_without_a_stopped_run_starts_anew_and_another_jobs_record_is_refused(tmp_path):
    coord = catalog(tmp_path)
    out = tmp_path / "catalog.jsonl"
    out.with_name(out.name + ".partial").write_text("left by a run with no progress record\n")
    report = export_items(pages_of(coord), out, log=lambda s: None, resume=True, page=7)
    assert report["resumed_at_item"] is None and len(out.read_text().splitlines()) == 100
    other = tmp_path / "other.jsonl"
    other.with_name(other.name + ".partial").write_text("x" * 10)
    progress_file(other).write_text(json.dumps({"k": 12, "bytes": 10, "items": 1, "next_bucket": 64}))
    with pytest.raises(InvalidInput, match="without --resume"):
        export_items(pages_of(coord), other, log=lambda s: None, resume=True)
