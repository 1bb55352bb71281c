"""Errors cross process boundaries (Ray pickles an actor's exception for its caller):
each must come back as itself, with its message and fields."""
import pickle

import pytest

import errno

from shards.errors import (CorruptData, FashionSearchError, InvalidInput, NotFound, ShardUnavailable,
                           StorageError, StorageFull, storage_error)

EXAMPLES = [InvalidInput("k must be 1..1000"), NotFound("no item with id 'x'"), StorageError("disk full"),
            StorageFull("write-ahead log append failed: No space left on device"),
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


def test_a_full_disk_or_quota_is_storage_full_other_failures_are_not():
    for code in (errno.ENOSPC, errno.EDQUOT):
        assert type(storage_error("cannot write x", OSError(code, "full"))) is StorageFull
    other = storage_error("cannot write x", OSError(errno.EACCES, "Permission denied"))
    assert type(other) is StorageError and str(other) == "cannot write x"
