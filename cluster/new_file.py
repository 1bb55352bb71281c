"""An output file that exists only once whole: written as NAME.partial, fsync'd, then renamed NAME.

The jobs that write one (`similar-items`, `export`) refuse a NAME that exists, so they
write over nothing, and a NAME a job left is always complete; a job cut short leaves
NAME.partial, which the next run replaces, or goes on with (`keep`). NAME.progress says
how far a job had made NAME.partial durable, and with what settings (`resume_point`).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from shards.errors import InvalidInput, StorageError
from shards.files import write_atomically
from shards.wal import fsync_dir


def check_new_file(path) -> Path:
    """`path`, absolute; refused when it exists (the job writes over nothing) or its folder does not."""
    out = Path(path).resolve()
    if out.exists():
        raise InvalidInput(f"{out} exists: the job writes a new file, it writes over nothing")
    if not out.parent.is_dir():        # said before the job reads anything, not after
        raise InvalidInput(f"no folder {out.parent} to write {out.name} in")
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


def progress_file(out: Path) -> Path:
    return out.with_name(out.name + ".progress")


def record_progress(out: Path, done: dict) -> None:
    """Say how far the job has made OUT.partial durable (`done["bytes"]`, from `durable()`)."""
    write_atomically(progress_file(out), json.dumps(done))


def resume_point(out: Path, settings: dict) -> dict | None:
    """What a stopped run made durable, if it ran with these settings and its file is there; None: start anew."""
    path, partial = progress_file(out), out.with_name(out.name + ".partial")
    if not path.is_file() or not partial.is_file():
        return None
    done = json.loads(path.read_text())
    if any(done.get(key) != value for key, value in settings.items()):
        raise InvalidInput(f"{path} is from a run with {({key: done.get(key) for key in settings})}, not {settings}: "
                           "run with those, or without --resume to start again")
    if partial.stat().st_size < done["bytes"]:
        raise InvalidInput(f"{partial} is shorter than {path} says it was made durable: run without --resume")
    return done
