"""Item fields as the shard stores them: validation and compact encodings.

- ids: a non-negative int below 2**63, or a non-empty string. Each id has a 64-bit
  *key* that orders ties: the int itself, or a stable hash of the string with the
  top bit set (so string keys never collide with int keys).
- codes: B bits (B a multiple of 64, 64..4096) packed little-endian into B/64 uint64
  words. `pack_bits` / `unpack_bits` convert from and to 0/1 arrays.
- colour histograms: any non-negative finite vector; stored as uint8
  round(255 * sqrt(h / sum(h))). The colour distance of two stored histograms is
  1 - <a, b> / 255**2, i.e. 1 - Bhattacharyya coefficient, in integer arithmetic so
  the fast scan and the oracle agree to the last bit.
- attribute tokens: "field=value" (field an identifier, value non-empty, printable).
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

from .errors import InvalidInput

MIN_BITS, MAX_BITS = 64, 4096
MAX_ID_LEN = 256
MAX_TOKEN_LEN = 256
HIST_SCALE = 255
HIST_NORM = float(HIST_SCALE * HIST_SCALE)
STRING_KEY_BIT = np.uint64(1 << 63)

_TOKEN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*=[^\x00-\x1f\x7f]+$")


def check_bits(bits: int) -> int:
    if not isinstance(bits, int) or bits % 64 or not MIN_BITS <= bits <= MAX_BITS:
        raise InvalidInput(f"code length must be a multiple of 64 in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    return bits


def id_key(item_id) -> int:
    """The 64-bit tie-break key of an id (see module docstring)."""
    if isinstance(item_id, bool) or not isinstance(item_id, (int, str, np.integer)):
        raise InvalidInput(f"an id is a non-negative int or a non-empty string, got {item_id!r}")
    if isinstance(item_id, (int, np.integer)):
        item_id = int(item_id)
        if not 0 <= item_id < 2**63:
            raise InvalidInput(f"an integer id must be in [0, 2**63), got {item_id!r}")
        return item_id
    if not item_id or len(item_id) > MAX_ID_LEN or not item_id.isprintable():
        raise InvalidInput(f"a string id must be 1..{MAX_ID_LEN} printable characters, got {item_id!r}")
    digest = hashlib.blake2b(item_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") | (1 << 63)


def id_from_text(raw: str):
    """The id that a text names (a URL path, a form field, a catalog's CSV cell).

    Digits without a leading zero (fewer than 19 of them) are an integer id; anything else is
    a string id, so SKU "007" stays "007" and never lands on item 7. A '/' is refused: no
    URL path (GET /items/{id}) could name such an item.
    """
    if raw.isascii() and raw.isdigit() and len(raw) < 19 and (raw == "0" or raw[0] != "0"):
        return int(raw)
    if "/" in raw:
        raise InvalidInput(f"an item id given as text cannot hold '/' (no URL could name it), got {raw!r}")
    id_key(raw)
    return raw


def id_keys(ids) -> np.ndarray:
    """Keys of many ids as a uint64 array (fast path when every id is an int)."""
    ids = list(ids)
    if ids and all(type(i) is int for i in ids):
        lo, hi = min(ids), max(ids)
        if lo < 0 or hi >= 2**63:
            bad = lo if lo < 0 else hi
            raise InvalidInput(f"an integer id must be in [0, 2**63), got {bad!r}")
        return np.array(ids, dtype=np.int64).astype(np.uint64)
    return np.array([id_key(i) for i in ids], dtype=np.uint64)


def check_token(token) -> str:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LEN or not _TOKEN_RE.match(token):
        raise InvalidInput(f"an attribute token is 'field=value' (field an identifier), got {token!r}")
    return token


def token_field(token: str) -> str:
    return token.split("=", 1)[0]


def as_codes(codes, bits: int, n: int | None = None) -> np.ndarray:
    """Validate packed codes: a (n, bits/64) uint64 array, or (n, bits/8) uint8 bytes."""
    words = bits // 64
    arr = np.asarray(codes)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.dtype == np.uint8 and arr.ndim == 2 and arr.shape[1] == bits // 8:
        arr = np.ascontiguousarray(arr).view(np.uint64)
    if arr.dtype != np.uint64 or arr.ndim != 2 or arr.shape[1] != words:
        raise InvalidInput(
            f"codes must be uint64 of shape (n, {words}) for {bits}-bit codes, got {arr.dtype} {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise InvalidInput(f"expected {n} codes, got {arr.shape[0]}")
    return np.ascontiguousarray(arr)


def quantize_hists(hists, bins: int, n: int | None = None) -> np.ndarray:
    """Float histograms (n, bins), non-negative and finite -> stored uint8 form."""
    arr = np.asarray(hists)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != bins:
        raise InvalidInput(f"colour histograms must have shape (n, {bins}), got {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise InvalidInput(f"expected {n} histograms, got {arr.shape[0]}")
    if not np.issubdtype(arr.dtype, np.number):
        raise InvalidInput(f"colour histograms must be numeric, got {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise InvalidInput("colour histogram values must be finite and non-negative")
    total = arr.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        raise InvalidInput("a colour histogram must have a positive sum")
    return np.rint(HIST_SCALE * np.sqrt(arr / total)).astype(np.uint8)


def dequantize_hist(qhist) -> np.ndarray:
    """A stored histogram (quantize_hists' uint8 form) read back as a float one that quantises to it
    again, up to a rounding step in a rare bin: how a stored item becomes a query."""
    return (np.asarray(qhist, np.float64) / HIST_SCALE) ** 2


def colour_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance between stored histograms a (n, bins) and b (bins,), in [0, 1]."""
    dot = a.astype(np.int64) @ b.astype(np.int64)
    return np.maximum(1.0 - dot / HIST_NORM, 0.0)


def pack_bits(bits01) -> np.ndarray:
    """0/1 array (n, B) -> packed uint64 codes (n, B/64); bit j of word w is bit 64*w+j."""
    arr = np.asarray(bits01)
    if arr.ndim == 1:
        arr = arr[None, :]
    check_bits(arr.shape[1])
    packed = np.packbits(arr.astype(bool), axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view(np.uint64)


def unpack_bits(codes: np.ndarray) -> np.ndarray:
    """Packed uint64 codes (n, W) -> 0/1 uint8 array (n, 64*W)."""
    codes = np.ascontiguousarray(codes, dtype=np.uint64)
    return np.unpackbits(codes.view(np.uint8), axis=1, bitorder="little")


def hamming(codes: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Plain numpy Hamming distances (the slow twin of the fused kernel)."""
    return hamming_pairs(codes, q[None, :])


def hamming_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance of row i of a with row i of b, for every i (b may be one row)."""
    return np.bitwise_count(np.bitwise_xor(a, b)).sum(axis=1, dtype=np.int64)


def bucket_of_keys(keys, n_buckets: int) -> np.ndarray:
    """Virtual bucket of each id key (splitmix64 finaliser, then modulo): stable everywhere."""
    x = np.asarray(keys, np.uint64).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x % np.uint64(n_buckets)).astype(np.int64)
