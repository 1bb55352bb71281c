"""An output file that exists only once whole: written as NAME.partial, fsync'd, then renamed NAME.

The jobs that write one (`similar-items`, `export`) refuse a NAME that exists, so they
write over nothing, and a NAME a job left is always complete; a job cut short leaves
NAME.partial, which the next run replaces, or goes on with (`keep`).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from shards.errors import InvalidInput, StorageError
from shards.wal import fsync_dir


def check_new_file(path) -> Path:
    """`path`, absolute; refused when it exists (the job writes over nothing)."""
    out = Path(path).resolve()
    if out.exists():
        raise InvalidInput(f"{out} exists: the job writes a new file, it writes over nothing")
    return out


@contextlib.contextmanager
def whole_file(path, keep: int | None = None):
    """A text file to write `path` through: it appears under its name only if the block ends normally.

    `keep`: go on with the NAME.partial a stopped run left, its first `keep` bytes kept (what
    that run had made durable, `durable()`), the rest cut off.
    """
    out = check_new_file(path)
    partial = out.with_name(out.name + ".partial")
    try:
        if keep is not None:
            os.truncate(partial, keep)
        with open(partial, "a" if keep is not None else "w") as f:
            yield f
            durable(f)
        os.rename(partial, out)
        fsync_dir(out.parent)
    except OSError as exc:
        raise StorageError(f"cannot write {out}: {exc.strerror or exc}") from exc


def durable(f) -> int:
    """Flush and fsync what was written to `f`; its length, which a resumed run may keep."""
    f.flush()
    os.fsync(f.fileno())
    return f.tell()
