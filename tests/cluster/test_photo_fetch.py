"""A feed's photo named by URL (cluster/photo_fetch.py), fetched from a real HTTP server on this machine:
kept once in the root's uploads/ under its content's name, and every failure a clear InvalidInput."""
import socket
from pathlib import Path

import pytest

from cluster.catalog_lines import read_catalog_lines
from cluster.photo_fetch import fetch_photo, is_url
from shards.errors import InvalidInput

from .photo_server import photo_server

PHOTO = (Path(__file__).resolve().parents[2] / "demo" / "catalog" / "images").glob("*.jpg")
PHOTO = next(iter(sorted(PHOTO))).read_bytes()


def test_a_photo_is_kept_once_per_item_under_the_items_and_its_contents_name(tmp_path):
    from cluster.uploads import upload_name
    with photo_server({"a.jpg": PHOTO, "b.jpg": PHOTO}) as (url, asked):
        first = fetch_photo(f"{url}/a.jpg", tmp_path, "7")
        again = fetch_photo(f"{url}/b.jpg", tmp_path, "7")          # the same photo at another URL
        moved = fetch_photo(f"{url}/to/a.jpg", tmp_path, "7")       # a redirect is followed
        other = fetch_photo(f"{url}/a.jpg", tmp_path, "8")          # another item: its own copy
    assert first == again == moved and first.parent == tmp_path / "uploads" and first.read_bytes() == PHOTO
    assert upload_name(f"uploads/{first.name}") == first.name       # named as uploads are
    assert other != first and other.read_bytes() == PHOTO
    other.unlink()                     # as DELETE /items/8 removes its photo: item 7's stays
    assert first.read_bytes() == PHOTO
    assert asked == ["/a.jpg", "/b.jpg", "/to/a.jpg", "/a.jpg", "/a.jpg"]


def test_each_failure_says_what_failed(tmp_path):
    with photo_server({"big.jpg": PHOTO, "empty.jpg": b""}) as (url, _):
        with pytest.raises(InvalidInput, match="HTTP 404"):
            fetch_photo(f"{url}/none.jpg", tmp_path, "1")
        with pytest.raises(InvalidInput, match="is over 1000 bytes"):
            fetch_photo(f"{url}/big.jpg", tmp_path, "1", max_bytes=1000)
        with pytest.raises(InvalidInput, match="is empty"):
            fetch_photo(f"{url}/empty.jpg", tmp_path, "1")
    with socket.socket() as s:       # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InvalidInput, match=r"cannot fetch the photo .*ConnectError.*\(3 tries\)"):
        fetch_photo(f"http://127.0.0.1:{port}/a.jpg", tmp_path, "1")
    assert not (tmp_path / "uploads").exists() or not any((tmp_path / "uploads").iterdir())


def test_a_failure_that_may_pass_is_tried_again_and_one_that_will_not_is_not():
    """A CDN's 503 or a refused connection: two more tries, after 1 s then 2 s, or as long as its
    Retry-After asks (up to 10 s); a 404 or a photo too big: at once."""
    import httpx

    from cluster.photo_fetch import download
    with photo_server({"a.jpg": PHOTO, "b.jpg": PHOTO}, busy={"a.jpg": 2, "b.jpg": 3}) as (url, asked), \
            httpx.Client() as client:
        waits = []
        assert download(f"{url}/a.jpg", client, wait=waits.append) == PHOTO      # the third try
        assert waits == [0, 0] and asked == ["/a.jpg"] * 3
        with pytest.raises(InvalidInput, match=r"HTTP 503 \(3 tries\)"):
            download(f"{url}/b.jpg", client, wait=waits.append)
        assert asked.count("/b.jpg") == 3
        with pytest.raises(InvalidInput, match="HTTP 404$"):
            download(f"{url}/none.jpg", client, wait=waits.append)
        with pytest.raises(InvalidInput, match="is over 10 bytes$"):
            download(f"{url}/b.jpg", client, max_bytes=10, wait=waits.append)
        assert asked.count("/none.jpg") == 1 and asked.count("/b.jpg") == 4 and waits == [0, 0, 0, 0]
        with socket.socket() as s:       # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with pytest.raises(InvalidInput, match="ConnectError"):
            download(f"http://127.0.0.1:{port}/a.jpg", client, wait=waits.append)
        assert waits[4:] == [1.0, 2.0]
        with pytest.raises(InvalidInput, match=r"ConnectError.*[^)]$"):       # told not to try again
            download(f"http://127.0.0.1:{port}/a.jpg", client, retries=0, wait=waits.append)
        assert len(waits) == 6


def test_a_feed_line_keeps_its_url(tmp_path):
    (tmp_path / "feed.jsonl").write_text('{"id": 1, "image": "https://cdn.example.com/p/1.jpg?w=800"}\n')
    [first] = read_catalog_lines(tmp_path / "feed.jsonl")
    assert first.image == "https://cdn.example.com/p/1.jpg?w=800" and is_url(first.image)
    (tmp_path / "feed.jsonl").write_text('{"id": 1, "image": "http://cdn.example.com/1.jpg"}\n'
                                         '{"id": 2, "image": "ftp://x/2.jpg"}\n')
    with pytest.raises(InvalidInput, match="line 2: a photo's URL is http:// or https://"):
        read_catalog_lines(tmp_path / "feed.jsonl")


def test_a_batch_is_fetched_together_each_in_its_place(tmp_path):
    from cluster.photo_fetch import fetch_photos
    files = {f"{i}.jpg": PHOTO + bytes([i]) for i in range(12)}
    with photo_server(files) as (url, asked):
        wanted = [(f"{url}/{i}.jpg", str(i)) for i in range(12)] + [(f"{url}/none.jpg", "x")]
        futures = fetch_photos(wanted, tmp_path)
    assert all(f.done() for f in futures) and len(asked) == 13
    assert [f.result().read_bytes() for f in futures[:12]] == [files[f"{i}.jpg"] for i in range(12)]
    with pytest.raises(InvalidInput, match="HTTP 404"):
        futures[12].result()
    assert fetch_photos([], tmp_path) == []


def test_retry_after_is_read_as_seconds_or_as_a_date():
    import httpx

    from cluster.photo_fetch import _retry_after
    now = 1_700_000_000.0        # 2023-11-14 22:13:20 GMT

    def asked(value):
        return _retry_after(httpx.Response(503, headers={"Retry-After": value}), now=now)
    assert asked("3") == 3.0 and asked("Tue, 14 Nov 2023 22:13:25 GMT") == 5.0
    assert asked("Tue, 14 Nov 2023 22:13:00 GMT") == 0.0            # already past: at once
    assert asked("soon") is None and asked("") is None and asked("-1") is None
