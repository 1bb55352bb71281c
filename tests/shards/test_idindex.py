"""The id index (C binary search through a uint32 order, numpy runs, rebuilds) against a dict."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shards import idindex
from shards._scan import lookup
from shards.idindex import MISSING
from shards.shard import Shard, ShardConfig

from .helpers import random_items


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 400), m=st.integers(0, 200))
def test_lookup_equals_numpy_searchsorted(seed, n, m):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 3 * n + 2, n + 5, dtype=np.uint64)  # with repeats outside `order`
    pos = np.unique(base, return_index=True)[1]
    order = pos[np.argsort(base[pos], kind="stable")].astype(np.uint32)
    keys = np.concatenate([rng.integers(0, 3 * n + 2, m, dtype=np.uint64), base[:3]])
    out = np.empty(len(keys), np.int64)
    lookup(base, order, keys, out)
    sorted_keys = base[order.astype(np.int64)]
    p = np.minimum(np.searchsorted(sorted_keys, keys), max(len(order) - 1, 0))
    expected = np.where((len(order) > 0) & (sorted_keys[p] == keys), order[p].astype(np.int64), -1)
    assert out.tolist() == expected.tolist()


def test_lookup_rejects_an_order_outside_base():
    out = np.empty(1, np.int64)
    with pytest.raises(ValueError, match="outside base"):
        lookup(np.zeros(2, np.uint64), np.array([0, 7], np.uint32), np.ones(1, np.uint64), out)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), ops=st.integers(1, 30))
def test_random_upserts_and_deletes_find_what_a_dict_finds(seed, ops, monkeypatch_rebuild):
    """Writes in random batches, with the index rebuilt from the blocks every few dozen keys."""
    rng = np.random.default_rng(seed)
    shard = Shard(None, ShardConfig(bits=64, hist_bins=8))
    model = {}
    for _ in range(ops):
        if model and rng.random() < 0.3:
            keys = list(model)
            picks = rng.choice(len(keys), size=min(len(keys), int(rng.integers(1, 6))), replace=False)
            gone = [keys[i] for i in picks]
            shard.delete(gone)
            for g in gone:
                model.pop(g)
        else:
            n = int(rng.integers(1, 12))
            ids, codes, hists, attrs = random_items(rng, n, 1, 8, start=int(rng.integers(0, 60)), str_ids=True)
            shard.upsert(ids, codes, hists, attrs)
            for i, item_id in enumerate(ids):
                model[item_id] = int(codes[i, 0])
        if rng.random() < 0.1:
            shard.compact()
        assert len(shard) == len(model)
    for item_id in range(0, 80):
        for key in (item_id, f"sku-{item_id}"):
            if key in model:
                assert int(shard.get(key)["code"][0]) == model[key]
            else:
                assert not shard.contains(key)
    assert sorted(map(str, shard.ids())) == sorted(map(str, model))


@pytest.fixture(scope="module")
def monkeypatch_rebuild():
    saved = idindex.MIN_REBUILD
    idindex.MIN_REBUILD = 16
    yield
    idindex.MIN_REBUILD = saved


def test_rebuild_keeps_blocks_sharing_the_base_keys():
    shard = Shard(None, ShardConfig(bits=64, hist_bins=8))
    ids, codes, hists, attrs = random_items(np.random.default_rng(0), 500, 1, 8)
    shard.upsert(ids, codes, hists, attrs)
    shard.compact()
    assert all(b.keys.base is shard.index.base for b in shard.blocks)
    assert shard.index.get(10**9) == MISSING
