"""Small files replaced whole: a crash leaves the old content or the new, never an empty file.

Written to a temporary name, fsync'd, renamed over the target, and the folder fsync'd
(a rename alone can reach the disk before the data it names).
"""
from __future__ import annotations

import os
from pathlib import Path

from .wal import fsync_dir


def write_atomically(path: str | os.PathLike, data: bytes | str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
