"""A catalog photo named by URL (a shop's feed, `index --catalog feed.jsonl`): fetched once, kept.

Shops' feeds name their photos by URL on their own servers or CDN. `index` fetches each
one and stores it in the storage root's uploads/ as POST /items stores an upload, named by
the item and the photo's content (`uploads/<sha256>.img`, never overwritten), so the item's
photo is served, exported and backed up with the root, and a URL that later answers another
photo does not change what an indexed item shows. Never shared by two items: deleting one
(DELETE /items/{id} removes its uploaded photo) leaves the other's, even where a shop uses
one photo for several items. The item records the URL as its `source`; `index --sync`
indexes an item again when its row names another URL.
"""
from __future__ import annotations

import hashlib
import time
from email.utils import parsedate_to_datetime
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx

from shards.errors import InvalidInput
from shards.files import write_atomically

from .uploads import uploads_folder

MAX_PHOTO_BYTES = 25_000_000     # a shop's photo is a few MB; more is not a product photo
TIMEOUT_S = 20.0
AT_ONCE = 8                      # fetches in flight per model actor: the network waits, not the CPU
RETRIES = 2                      # tries after the first, for a failure that may pass (Transient)
BACKOFF_S = 1.0
MAX_WAIT_S = 10.0                # the longest Retry-After heeded: a row should not hold its batch for long
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


def is_url(image) -> bool:
    return isinstance(image, str) and image.startswith(("http://", "https://"))


class Transient(Exception):
    """A failure that may pass: the server busy or failing (429, 5xx), the network (a timeout, a
    dropped or refused connection). `retry_after`: seconds the server asked to wait, if it did.
    Never leaves `download`: tried again, then an InvalidInput as every other failure is."""
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def download(url: str, client: httpx.Client, max_bytes: int = MAX_PHOTO_BYTES, retries: int = RETRIES,
             wait=time.sleep) -> bytes:
    """The bytes at `url`; a failure (status, size, timeout, refusal, nothing there) is an
    InvalidInput saying which, so the row is reported and the job goes on. A Transient one is
    tried again `retries` times, after 1 s, then 2 s (or the Retry-After asked, up to 10 s): a
    CDN's passing 503 should not send a row to the errors file."""
    tries = 0
    while True:
        try:
            return _download_once(url, client, max_bytes)
        except Transient as exc:
            tries += 1
            if tries > retries:
                raise InvalidInput(f"{exc} ({tries} tries)" if tries > 1 else str(exc)) from None
            asked = exc.retry_after
            wait(min(MAX_WAIT_S, asked if asked is not None else BACKOFF_S * 2 ** (tries - 1)))


def _retry_after(r: httpx.Response, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for: a number, or an HTTP date; None without a usable one."""
    value = r.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _download_once(url: str, client: httpx.Client, max_bytes: int) -> bytes:
    try:
        with client.stream("GET", url) as r:
            if r.status_code in TRANSIENT_STATUS:
                raise Transient(f"cannot fetch the photo {url}: HTTP {r.status_code}", _retry_after(r))
            if r.status_code != 200:
                raise InvalidInput(f"cannot fetch the photo {url}: HTTP {r.status_code}")
            announced = r.headers.get("content-length", "")
            if announced.isdigit() and int(announced) > max_bytes:     # said at once; a bad header is not trusted
                raise InvalidInput(f"the photo at {url} is over {max_bytes} bytes")
            data = bytearray()
            for chunk in r.iter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise InvalidInput(f"the photo at {url} is over {max_bytes} bytes")
    except httpx.TransportError as exc:     # a timeout, a refused or dropped connection
        raise Transient(f"cannot fetch the photo {url}: {exc.__class__.__name__}: {exc}") from None
    except httpx.HTTPError as exc:          # too many redirects, a URL httpx cannot use
        raise InvalidInput(f"cannot fetch the photo {url}: {exc.__class__.__name__}: {exc}") from None
    if not data:
        raise InvalidInput(f"the photo at {url} is empty")
    return bytes(data)


def fetch_photo(url: str, root: Path, item_id: str, client: httpx.Client | None = None,
                max_bytes: int = MAX_PHOTO_BYTES) -> Path:
    """The photo at `url` for item `item_id`, stored durably in `root`'s uploads/ (once: a stored
    copy is kept); returns where it lies. A failed fetch is download's InvalidInput."""
    own = client is None
    client = client or httpx.Client(timeout=TIMEOUT_S, follow_redirects=True)
    try:
        data = download(url, client, max_bytes)
    finally:
        if own:
            client.close()
    name = hashlib.sha256(f"{item_id}\0".encode() + data).hexdigest()[:32]
    dest = uploads_folder(root) / f"{name}.img"
    if not dest.exists():      # named by the item and the content: a file there is this photo
        write_atomically(dest, data)     # a full disk stops the job: no row of it is any better
    return dest


def in_flight(fn, calls: list[tuple]) -> list[Future]:
    """fn(*args, client) for each args of `calls`, AT_ONCE at a time over one connection pool:
    their futures, in order, all done (each gives fn's result or raises its error)."""
    if not calls:
        return []
    with httpx.Client(timeout=TIMEOUT_S, follow_redirects=True) as client, ThreadPoolExecutor(AT_ONCE) as pool:
        futures = [pool.submit(fn, *args, client) for args in calls]
    return futures          # the pool's exit waited for every one, before the client closed


def fetch_photos(wanted: list[tuple[str, str]], root: Path) -> list[Future]:
    """A batch's photos to keep, (url, item id) each: fetch_photo's futures, in order, all done."""
    return in_flight(lambda url, item_id, client: fetch_photo(url, root, item_id, client), wanted)


def download_all(urls: list[str]) -> list[Future]:
    """A batch's photos to read and forget (a batch job's queries): download's futures, in order."""
    return in_flight(download, [(u,) for u in urls])
