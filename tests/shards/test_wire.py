"""Queries and answers survive the msgpack wire unchanged; bad messages are InvalidInput."""
from dataclasses import replace

import numpy as np
import pytest

from shards.errors import InvalidInput
from shards.shard import Shard, ShardConfig
from shards.wire import decode_answer, decode_queries, encode_answer, encode_queries

from .helpers import random_items, random_query


def test_round_trip_gives_identical_answers():
    rng = np.random.default_rng(0)
    shard = Shard(None, ShardConfig(bits=128, hist_bins=8))
    ids, codes, hists, attrs = random_items(rng, 500, 2, 8, str_ids=True)
    metas = [{"title": f"item {i}"} if i % 3 == 0 else None for i in range(len(ids))]
    shard.upsert(ids, codes, hists, attrs, metas)
    qs = [shard.prepare(random_query(rng, 2, 8)) for _ in range(20)]
    levels = [None] * 10 + [0] * 10
    qs2, levels2 = decode_queries(encode_queries(qs, levels), 128, 8, 1000)
    for a, b in zip(qs, qs2):
        assert (a.code == b.code).all() and (a.qhist == b.qhist).all()
        assert (a.k, a.required, a.filters, a.optional, a.w_hamming, a.w_colour, a.w_optional) == \
               (b.k, b.required, b.filters, b.optional, b.w_hamming, b.w_colour, b.w_optional)
    assert levels2 == levels
    direct = shard.search_batch(qs, levels)
    assert any(h.meta for r in direct for h in r.hits) and any(isinstance(h.id, str) for r in direct for h in r.hits)
    assert decode_answer(encode_answer(shard.search_columns(qs2, levels2))).results(qs) == direct


@pytest.mark.parametrize("cut", [0, 1, 10, -1])
def test_damaged_answers_are_invalid_input(cut):
    rng = np.random.default_rng(1)
    shard = Shard(None, ShardConfig(bits=128, hist_bins=8))
    shard.upsert(*random_items(rng, 50, 2, 8))
    payload = encode_answer(shard.search_columns([shard.prepare(random_query(rng, 2, 8)) for _ in range(3)]))
    with pytest.raises(InvalidInput):
        decode_answer(payload[:cut] if cut >= 0 else payload[:-1])


@pytest.mark.parametrize("payload", [b"", b"\x93\x01\x02", b"\xc1", b"\x91\x9a" + b"\xc0" * 10])
def test_malformed_messages_are_invalid_input(payload):
    with pytest.raises(InvalidInput):
        decode_queries(payload, 128, 8, 1000)


def test_only_hits_travel_when_k_differ():
    """One k=1000 query among k=1 ones: the answer's padding stays home, and nothing is lost."""
    rng = np.random.default_rng(2)
    shard = Shard(None, ShardConfig(bits=128, hist_bins=8))
    shard.upsert(*random_items(rng, 50, 2, 8))
    qs = [shard.prepare(random_query(rng, 2, 8)) for _ in range(21)]
    qs = [replace(q, k=1000 if i == 0 else 1) for i, q in enumerate(qs)]
    answer = shard.search_columns(qs)
    assert answer.scores.shape == (21, 1000)
    payload = encode_answer(answer)
    assert len(payload) < 10_000  # padded, it would be ~700 kB
    assert decode_answer(payload).results(qs) == shard.search_batch(qs)


def _columns(payload):
    import msgpack
    return msgpack.unpackb(payload, raw=False)


def _packed(cols):
    import msgpack
    return msgpack.packb(cols, use_bin_type=True)


@pytest.mark.parametrize("damage", ["k", "weight", "budget", "widen", "list_index", "token", "repeat", "levels",
                                    "code"])
def test_damaged_query_columns_are_invalid_input(damage):
    """Each column is checked on arrival: a bad k, weight, token or reference never reaches a scan."""
    rng = np.random.default_rng(3)
    shard = Shard(None, ShardConfig(bits=128, hist_bins=8))
    qs = [shard.prepare(random_query(rng, 2, 8)) for _ in range(4)]
    cols = _columns(encode_queries(qs, [None] * 4))
    assert decode_queries(_packed(cols), 128, 8, 1000)[0][2].required == qs[2].required
    if damage == "k":
        ints = np.frombuffer(cols[3], np.int64).copy()
        ints[4] = 0                    # (k, widen) per query: the third query's k
        cols[3] = ints.tobytes()
    elif damage == "weight":
        w = np.frombuffer(cols[4], np.float64).copy()
        w[5] = np.nan
        cols[4] = w.tobytes()
    elif damage == "budget":
        w = np.frombuffer(cols[4], np.float64).copy()
        w[3] = 1.5                     # (w_hamming, w_colour, w_optional, scan_budget): over the catalog
        cols[4] = w.tobytes()
    elif damage == "widen":
        ints = np.frombuffer(cols[3], np.int64).copy()
        ints[1] = 99                   # more tokens to widen by than the query requires
        cols[3] = ints.tobytes()
    elif damage == "list_index":
        idx = np.frombuffer(cols[7], np.int32).copy()
        idx[4] = len(cols[6])
        cols[7] = idx.tobytes()
    elif damage == "token":
        cols[6][0] = ["not a token"]
    elif damage == "repeat":
        cols[6][0] = ["colour=red", "colour=red"]
    elif damage == "levels":
        cols[5] = cols[5][:3]
    elif damage == "code":
        cols[1] = cols[1][:-8]
    with pytest.raises(InvalidInput):
        decode_queries(_packed(cols), 128, 8, 1000)


def test_query_columns_share_token_lists():
    """A batch that repeats one category's tokens carries each distinct list once."""
    rng = np.random.default_rng(4)
    shard = Shard(None, ShardConfig(bits=128, hist_bins=8))
    q = shard.prepare(random_query(rng, 2, 8))
    qs = [replace(q, k=k) for k in range(1, 51)]
    cols = _columns(encode_queries(qs, [0] * 50))
    assert len(cols[6]) <= 3
    back, levels = decode_queries(_packed(cols), 128, 8, 1000)
    assert [b.k for b in back] == list(range(1, 51)) and levels == [0] * 50
    assert all(b.required == q.required and b.optional == q.optional for b in back)
