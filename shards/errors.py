"""Every error this project raises on purpose, in one tree.

    FashionSearchError
     ├── InvalidInput (ValueError)     a caller's argument is wrong; nothing was changed
     ├── NotFound (KeyError)           no item with that id
     ├── StorageError (OSError)        a shard's files could not be read or written
     │    ├── StorageFull              the disk or quota is full: retrying waits for space
     │    └── CorruptData              a file is damaged beyond what recovery may repair
     └── ShardUnavailable              a shard did not answer in time, or is gone

Callers at a boundary (the REST front, the CLI) translate these into a status code
and a one-line message; anything else escaping is a bug.
"""
import errno


class FashionSearchError(Exception):
    """Base of every error raised on purpose by this project."""


class InvalidInput(FashionSearchError, ValueError):
    """An argument is malformed or out of range. Nothing was changed."""


class NotFound(FashionSearchError, KeyError):
    """No item with that id."""

    def __str__(self) -> str:  # KeyError quotes its argument; a message reads better plain
        return str(self.args[0]) if self.args else "not found"


class StorageError(FashionSearchError, OSError):
    """A shard's files could not be read or written."""


class StorageFull(StorageError):
    """No space left (or the quota is spent): nothing was written, and retrying will not help
    until space is freed (REST: 507, not 503)."""


def storage_error(message: str, exc: OSError) -> StorageError:
    """StorageFull when `exc` says the disk or quota is full, else StorageError; `message` names what failed."""
    full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
    return (StorageFull if full else StorageError)(message)


class CorruptData(StorageError):
    """A persisted file is damaged and no intact copy could replace it."""


class ShardUnavailable(FashionSearchError):
    """A shard did not answer within its timeout, or its actor is dead."""

    def __init__(self, shard: str, reason: str):
        super().__init__(f"shard {shard!r} unavailable: {reason}")
        self.shard = shard
        self.reason = reason

    def __reduce__(self):   # Exception pickles its args (the message): Ray must rebuild it from (shard, reason)
        return type(self), (self.shard, self.reason)
