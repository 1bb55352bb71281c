"""Write-ahead log: length- and CRC-framed msgpack records, fsync'd before ack.

Record frame (little-endian):  u32 length | u32 crc32(seq + payload) | u64 seq | payload

The log is a series of segment files `wal-<first seq>.log`. Reading stops at a
torn tail (a frame that runs past the end of the file: a write that was never
acknowledged) and skips a record whose CRC does not match, reporting each in
`warnings`; neither crashes the shard nor yields a wrong item.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from .errors import storage_error

HEADER = struct.Struct("<IIQ")
MAX_RECORD = 1 << 30              # a frame claiming more than this is garbage
MSGPACK_LIMITS = dict(max_bin_len=MAX_RECORD, max_str_len=1 << 20, max_array_len=1 << 26,
                      max_map_len=1 << 20)


def segment_name(first_seq: int) -> str:
    return f"wal-{first_seq:016d}.log"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    out = []
    for p in directory.glob("wal-*.log"):
        try:
            out.append((int(p.stem.split("-", 1)[1]), p))
        except ValueError:
            continue
    return sorted(out)


def encode(seq: int, record: dict) -> bytes:
    payload = msgpack.packb(record, use_bin_type=True)
    crc = zlib.crc32(payload, zlib.crc32(struct.pack("<Q", seq)))
    return HEADER.pack(len(payload), crc, seq) + payload


@dataclass
class ReadResult:
    records: list[tuple[int, dict]] = field(default_factory=list)
    good_end: int = 0                      # offset after the last intact frame
    torn: bool = False                     # the file ends inside a frame
    warnings: list[str] = field(default_factory=list)


def read_segment(path: Path) -> ReadResult:
    data = path.read_bytes()
    out = ReadResult()
    off = 0
    while off < len(data):
        if off + HEADER.size > len(data):
            out.torn = True
            out.warnings.append(f"{path.name}: torn record header at byte {off} (unacknowledged write), ignored")
            break
        length, crc, seq = HEADER.unpack_from(data, off)
        end = off + HEADER.size + length
        if length > MAX_RECORD or end > len(data):
            out.torn = True
            out.warnings.append(f"{path.name}: torn or garbled record at byte {off} "
                                f"({len(data) - off} bytes from there on ignored)")
            break
        payload = data[off + HEADER.size: end]
        if zlib.crc32(payload, zlib.crc32(struct.pack("<Q", seq))) != crc:
            out.warnings.append(f"{path.name}: record at byte {off} fails its CRC and was skipped")
        else:
            try:
                out.records.append((seq, msgpack.unpackb(payload, raw=False, **MSGPACK_LIMITS)))
            except Exception as exc:  # CRC matched but msgpack refused: report, never apply
                out.warnings.append(f"{path.name}: record at byte {off} does not decode ({exc}), skipped")
        off = end
        out.good_end = off
    return out


class WalWriter:
    """Appends records to the current segment; `append` returns once durable."""

    def __init__(self, path: Path, fsync: bool = True):
        self.path = path
        self.fsync = fsync
        try:
            new = not path.exists()
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if new and fsync:   # the new file's name must be durable before a record in it is acknowledged
                fsync_dir(path.parent)
        except OSError as exc:
            if getattr(self, "fd", -1) >= 0:
                os.close(self.fd)
            raise storage_error(f"cannot open write-ahead log {path}: {exc}", exc) from exc
        self.size = os.fstat(self.fd).st_size

    def append(self, seq: int, record: dict) -> None:
        frame = encode(seq, record)
        try:
            view = memoryview(frame)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
            if self.fsync:
                os.fsync(self.fd)
        except OSError as exc:
            # A partial frame may be on disk; cut it off so the log stays well-formed.
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                pass
            raise storage_error(f"write-ahead log append failed: {exc}", exc) from exc
        self.size += len(frame)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
