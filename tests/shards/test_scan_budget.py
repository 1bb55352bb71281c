"""A scan budget widens a query: narrowing tokens are dropped while the scan stays within it."""
import numpy as np
import pytest

from shards.errors import InvalidInput
from shards.query import Query, choose_level
from shards.shard import Shard, ShardConfig


def catalog():
    """100 items: 40 shirts (10 of them red), 60 other things (30 red)."""
    shard = Shard(None, ShardConfig(bits=64, hist_bins=8))
    attrs = [["articleType=Shirts" if i < 40 else "articleType=Jeans",
              "baseColour=Red" if (i < 10 or i >= 70) else "baseColour=Blue"] for i in range(100)]
    rng = np.random.default_rng(0)
    shard.upsert(list(range(100)), rng.integers(0, 2**63, (100, 1), dtype=np.uint64), np.ones((100, 8)), attrs)
    return shard


def query(budget, widen=1, k=5):
    return Query(code=np.zeros(1, np.uint64), hist=np.ones(8), k=k, required=("articleType=Shirts", "baseColour=Red"),
                 widen=widen, scan_budget=budget)


@pytest.mark.parametrize("budget, level, scanned", [(0.0, 0, 10), (0.3, 0, 10), (0.5, 1, 40), (1.0, 1, 40)])
def test_the_colour_narrows_only_a_scan_over_budget(budget, level, scanned):
    r = catalog().search(query(budget))
    assert r.level == level and r.scanned == scanned
    assert r.relaxed == (("baseColour=Red",) if level else ())
    assert all(h.id < 40 for h in r.hits)             # the category is never dropped for the budget


def test_the_k_rule_still_relaxes_and_widen_zero_never_widens():
    shard = catalog()
    assert shard.search(query(0.0, k=20)).level == 1       # 10 red shirts < k: relaxed for k
    assert shard.search(query(1.0, widen=0)).level == 0    # nothing may be dropped for the budget


def test_choose_level_rule():
    assert choose_level([10, 40, 100], 5, 2) == 0
    assert choose_level([10, 40, 100], 5, 2, widen=1, budget=50) == 1
    assert choose_level([10, 40, 100], 5, 2, widen=2, budget=50) == 1
    assert choose_level([10, 40, 100], 5, 2, widen=2, budget=100) == 2
    assert choose_level([10, 40, 100], 5, 2, widen=2, budget=5) == 0     # even level 0 is over: it stays
    assert choose_level([1, 2, 3], 5, 2, widen=1, budget=100) == 2       # never fewer than k allows


@pytest.mark.parametrize("bad", [dict(widen=3), dict(widen=-1), dict(scan_budget=1.5), dict(scan_budget=-0.1),
                                 dict(widen=True)])
def test_bad_budgets_are_invalid_input(bad):
    q = dict(code=np.zeros(1, np.uint64), hist=np.ones(8), required=("articleType=Shirts", "baseColour=Red"))
    with pytest.raises(InvalidInput):
        catalog().search(Query(**q, **bad))
