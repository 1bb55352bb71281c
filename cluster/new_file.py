"""An output file that exists only once whole: written as NAME.partial, fsync'd, then renamed NAME.

The jobs that write one (`similar-items`, `export`) refuse a NAME that exists, so they
write over nothing, and a NAME a job left is always complete; a job cut short leaves
NAME.partial, which the next run replaces.
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
def whole_file(path):
    """A text file to write `path` through: it appears under its name only if the block ends normally."""
    out = check_new_file(path)
    partial = out.with_name(out.name + ".partial")
    try:
        with open(partial, "w") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.rename(partial, out)
        fsync_dir(out.parent)
    except OSError as exc:
        raise StorageError(f"cannot write {out}: {exc.strerror or exc}") from exc
