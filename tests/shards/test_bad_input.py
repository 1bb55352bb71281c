"""Bad input gets a clear InvalidInput and changes nothing."""
import numpy as np
import pytest

from shards.codes import pack_bits, unpack_bits, quantize_hists
from shards.errors import InvalidInput, NotFound
from shards.query import Query
from shards.shard import Shard, ShardConfig

CFG = ShardConfig(bits=128, hist_bins=8)
GOOD_CODE = np.zeros((1, 2), np.uint64)
GOOD_HIST = np.ones((1, 8))


@pytest.fixture
def shard(tmp_path):
    s = Shard(tmp_path / "s", CFG)
    s.upsert([1], GOOD_CODE, GOOD_HIST, [["articleType=Shirts"]])
    return s


@pytest.mark.parametrize("ids,codes,hists,attrs,match", [
    ([2], np.zeros((1, 3), np.uint64), GOOD_HIST, [["a=b"]], "shape"),
    ([2], GOOD_CODE, np.full((1, 8), np.nan), [["a=b"]], "finite"),
    ([2], GOOD_CODE, -np.ones((1, 8)), [["a=b"]], "non-negative"),
    ([2], GOOD_CODE, np.zeros((1, 8)), [["a=b"]], "positive sum"),
    ([""], GOOD_CODE, GOOD_HIST, [["a=b"]], "string id"),
    ([-1], GOOD_CODE, GOOD_HIST, [["a=b"]], "integer id"),
    ([2.5], GOOD_CODE, GOOD_HIST, [["a=b"]], "id"),
    ([2], GOOD_CODE, GOOD_HIST, [["nofield"]], "field=value"),
    ([2], GOOD_CODE, GOOD_HIST, [["=x"]], "field=value"),
    ([2], GOOD_CODE, GOOD_HIST, ["a=b"], "list of tokens"),
    ([2], GOOD_CODE, GOOD_HIST, [["articleType=A", "articleType=B"]], "at most one"),
    ([2, 2], np.zeros((2, 2), np.uint64), np.ones((2, 8)), [["a=b"], ["a=b"]], "duplicate"),
    ([], np.zeros((0, 2), np.uint64), np.ones((0, 8)), [], "at least one"),
])
def test_bad_upserts_change_nothing(shard, ids, codes, hists, attrs, match):
    before = shard.stats()
    with pytest.raises(InvalidInput, match=match):
        shard.upsert(ids, codes, hists, attrs)
    after = shard.stats()
    assert after["items"] == before["items"] and after["seq"] == before["seq"]
    assert after["wal_bytes"] == before["wal_bytes"]


@pytest.mark.parametrize("k", [0, -1, 10**9, "ten", 2.0, True])
def test_bad_k(shard, k):
    with pytest.raises(InvalidInput, match="k must be"):
        shard.search(Query(code=GOOD_CODE[0], hist=GOOD_HIST[0], k=k))


def test_bad_query_fields(shard):
    with pytest.raises(InvalidInput, match="shape"):
        shard.search(Query(code=np.zeros(3, np.uint64), hist=GOOD_HIST[0]))
    with pytest.raises(InvalidInput, match="field=value"):
        shard.search(Query(code=GOOD_CODE[0], hist=GOOD_HIST[0], required=("bad token",)))
    with pytest.raises(InvalidInput, match="w_colour"):
        shard.search(Query(code=GOOD_CODE[0], hist=GOOD_HIST[0], w_colour=float("inf")))
    # an answer marks a hit's tokens in a 64-bit mask, so a query has at most 64 distinct ones
    many = tuple(f"colour=c{i}" for i in range(65))
    with pytest.raises(InvalidInput, match="at most 64 distinct tokens"):
        shard.search(Query(code=GOOD_CODE[0], hist=GOOD_HIST[0], optional=many))
    last = shard.search(Query(code=GOOD_CODE[0], hist=GOOD_HIST[0], optional=many[:63] + ("articleType=Shirts",)))
    assert last.hits[0].matched == ("articleType=Shirts",)  # the 64th token: the mask's top bit
    # a bad histogram in a batch is that query's own error
    with pytest.raises(InvalidInput, match="finite"):
        shard.search_batch([Query(code=GOOD_CODE[0], hist=GOOD_HIST[0]),
                            Query(code=GOOD_CODE[0], hist=np.full(8, np.nan))])


def test_get_unknown_is_not_found(shard):
    with pytest.raises(NotFound):
        shard.get(12345)
    with pytest.raises(NotFound):
        shard.get("sku-x")


def test_bad_code_length_config():
    for bits in (0, 100, 8192):
        with pytest.raises(InvalidInput, match="multiple of 64"):
            ShardConfig(bits=bits)


def test_pack_unpack_round_trip():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (5, 256))
    assert (unpack_bits(pack_bits(bits)) == bits).all()


def test_quantised_histograms_normalise():
    a = quantize_hists(np.array([[1, 0, 0, 0]]), 4)
    assert a.tolist() == [[255, 0, 0, 0]]
    b = quantize_hists(np.array([[5, 0, 0, 0]]), 4)
    assert (a == b).all()  # scale does not matter
