"""Snapshot files: one msgpack document with a magic header and a CRC trailer.

`snapshot-<seq>.msgpack` holds the whole shard state as of log record `seq`:
codes, histograms and keys as raw bytes, postings in roaring's portable
serialisation. Written to a temporary name, fsync'd, renamed, and the directory
fsync'd, so a crash leaves either the old snapshot or the new one, never half.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import msgpack

from .errors import CorruptData, storage_error
from .wal import MSGPACK_LIMITS, fsync_dir

MAGIC = b"FSSNAP1\n"


def snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:016d}.msgpack"


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    out = []
    for p in directory.glob("snapshot-*.msgpack"):
        try:
            out.append((int(p.stem.split("-", 1)[1]), p))
        except ValueError:
            continue
    return sorted(out)


def write_snapshot(directory: Path, seq: int, doc: dict, fsync: bool = True) -> Path:
    body = msgpack.packb(doc, use_bin_type=True)
    final = directory / snapshot_name(seq)
    tmp = final.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            f.write(body)
            f.write(struct.pack("<I", zlib.crc32(body)))
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as exc:   # a full disk, say: no half-written file is left to fill it further
        tmp.unlink(missing_ok=True)
        raise storage_error(f"cannot write snapshot {final.name}: {exc.strerror or exc}", exc) from exc
    if fsync:
        fsync_dir(directory)
    return final


def read_snapshot(path: Path) -> dict:
    data = path.read_bytes()
    if len(data) < len(MAGIC) + 4 or not data.startswith(MAGIC):
        raise CorruptData(f"{path.name}: not a snapshot (bad header or truncated)")
    body, trailer = data[len(MAGIC):-4], data[-4:]
    if struct.unpack("<I", trailer)[0] != zlib.crc32(body):
        raise CorruptData(f"{path.name}: checksum mismatch (truncated or damaged)")
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False, **MSGPACK_LIMITS)
    except Exception as exc:
        raise CorruptData(f"{path.name}: does not decode: {exc}") from exc
