"""Errors cross process boundaries (Ray pickles an actor's exception for its caller):
each must come back as itself, with its message and fields."""
import pickle

import pytest

from shards.errors import (CorruptData, FashionSearchError, InvalidInput, NotFound, ShardUnavailable,
                           StorageError)

EXAMPLES = [InvalidInput("k must be 1..1000"), NotFound("no item with id 'x'"), StorageError("disk full"),
            CorruptData("snapshot-3 is damaged"), ShardUnavailable("shard-001", "no answer within 5.0 s")]


def test_every_error_class_has_an_example():
    def subclasses(cls):
        return {cls} | {s for c in cls.__subclasses__() for s in subclasses(c)}
    assert {type(e) for e in EXAMPLES} == subclasses(FashionSearchError) - {FashionSearchError}


@pytest.mark.parametrize("exc", EXAMPLES, ids=lambda e: type(e).__name__)
def test_an_error_survives_pickling(exc):
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc) and str(back) == str(exc)
    assert vars(back) == vars(exc)
