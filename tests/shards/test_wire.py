"""Queries and answers survive the msgpack wire unchanged; bad messages are InvalidInput."""
import numpy as np
import pytest

from shards.errors import InvalidInput
from shards.shard import Shard, ShardConfig
from shards.wire import decode_queries, decode_results, encode_queries, encode_results

from .helpers import random_items, random_query


def test_round_trip_gives_identical_answers():
    rng = np.random.default_rng(0)
    shard = Shard(None, ShardConfig(bits=128, hist_bins=8))
    ids, codes, hists, attrs = random_items(rng, 500, 2, 8, str_ids=True)
    shard.upsert(ids, codes, hists, attrs)
    qs = [shard.prepare(random_query(rng, 2, 8)) for _ in range(20)]
    levels = [None] * 10 + [0] * 10
    qs2, levels2 = decode_queries(encode_queries(qs, levels), 128, 8, 1000)
    for a, b in zip(qs, qs2):
        assert (a.code == b.code).all() and (a.qhist == b.qhist).all()
        assert (a.k, a.required, a.filters, a.optional, a.w_hamming, a.w_colour, a.w_optional) == \
               (b.k, b.required, b.filters, b.optional, b.w_hamming, b.w_colour, b.w_optional)
    assert levels2 == levels
    direct = shard.search_batch(qs, levels)
    assert decode_results(encode_results(shard.search_batch(qs2, levels2))) == direct


@pytest.mark.parametrize("payload", [b"", b"\x93\x01\x02", b"\xc1", b"\x91\x9a" + b"\xc0" * 10])
def test_malformed_messages_are_invalid_input(payload):
    with pytest.raises(InvalidInput):
        decode_queries(payload, 128, 8, 1000)
