"""decode_photo, the query path's fast read of a big photo, against its oracle: the whole photo
decoded (decode_image) and then shrunk to its working copy (working_copy), on random photos of
every kind a shop sends: JPEG (decoded at reduced scale), PNG, WebP, 16-bit grey, palette GIF
with a transparent index, RGBA cutouts, CMYK, colour profiles, EXIF-rotated, big and small."""
import io

import numpy as np
import pytest
from PIL import Image

from models.data import decode_image, decode_photo
from models.framing import WORKING_SIDE, working_copy
from shards.errors import InvalidInput

from .test_colour_space import dull_primaries, icc_profile

rng = np.random.default_rng(7)


def _scene(w: int, h: int, seed: int) -> np.ndarray:
    """A smooth random picture: blocks of colour blurred by enlarging, as a photo's content is
    smooth at the scale the networks read (a pixel-sized noise would differ by any resampling)."""
    g = np.random.default_rng(seed)
    coarse = g.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC))


def _encode(arr: np.ndarray, mode: str, fmt: str, **save) -> bytes:
    img = Image.fromarray(arr)
    if mode == "RGBA":
        alpha = np.full(arr.shape[:2], 255, np.uint8)
        alpha[: arr.shape[0] // 3] = 0                               # a transparent backdrop
        img = Image.fromarray(np.dstack([arr, alpha]), "RGBA")
    elif mode == "I;16":
        img = Image.fromarray(arr[..., 0].astype(np.uint16) * 257)     # mode I;16
    elif mode == "P":
        img = img.quantize(32)
        img.info["transparency"] = 0
    elif mode != "RGB":
        img = img.convert(mode)
    out = io.BytesIO()
    img.save(out, format=fmt, **save)
    return out.getvalue()


def _rotated(data: bytes) -> bytes:
    """The same JPEG tagged EXIF orientation 6 (turn 90 degrees clockwise to show), as a phone saves one."""
    img = Image.open(io.BytesIO(data))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=92, exif=exif.tobytes())
    return out.getvalue()


CASES = [("RGB", "JPEG", {"quality": 92}), ("RGB", "PNG", {}), ("RGB", "WEBP", {"quality": 95}),
         ("RGBA", "PNG", {}), ("I;16", "PNG", {}), ("P", "GIF", {}), ("CMYK", "JPEG", {"quality": 95}),
         ("L", "JPEG", {"quality": 92}), ("RGB", "JPEG", {"quality": 85, "progressive": True}),
         ("RGB", "JPEG", {"quality": 92, "icc_profile": icc_profile(dull_primaries())}),
         ("RGBA", "PNG", {"icc_profile": icc_profile(dull_primaries())})]


@pytest.mark.parametrize("mode,fmt,save", CASES, ids=[f"{m}-{f}-{'icc' if 'icc_profile' in s else 'plain'}"
                                                    f"{'-progressive' if 'progressive' in s else ''}"
                                                    for m, f, s in CASES])
@pytest.mark.parametrize("size", [(640, 480), (1024, 1024), (3000, 2250), (1500, 4100)])
def test_the_fast_read_is_the_working_copy_of_the_whole_decoded_photo(mode, fmt, save, size):
    data = _encode(_scene(*size, seed=size[0] + len(mode)), mode, fmt, **save)
    photo, factor, shown = decode_photo(data)
    whole = decode_image(data)
    oracle, oracle_factor = working_copy(whole)
    assert shown == whole.size
    assert photo.mode == "RGB" and photo.size == oracle.size
    assert max(photo.size) <= WORKING_SIDE
    assert factor == pytest.approx(oracle_factor, rel=1e-3)
    diff = np.abs(np.asarray(photo, np.int16) - np.asarray(oracle, np.int16))
    # a JPEG decoded at 1/2-1/4 scale averages its blocks as the resize would: a grey level or two
    assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 12, (diff.mean(), np.percentile(diff, 99))


def test_a_small_photo_is_read_exactly_as_decode_image_reads_it():
    for mode, fmt, save in CASES:
        data = _encode(_scene(300, 400, seed=1), mode, fmt, **save)
        photo, factor, shown = decode_photo(data)
        assert factor == 1.0 and shown == photo.size
        assert np.array_equal(np.asarray(photo), np.asarray(decode_image(data)))


def test_an_exif_rotated_phone_photo_is_read_upright_with_the_factor_of_its_shown_pixels():
    data = _rotated(_encode(_scene(4000, 3000, seed=3), "RGB", "JPEG", quality=92))
    photo, factor, shown = decode_photo(data)
    oracle, oracle_factor = working_copy(decode_image(data))
    assert shown == (3000, 4000)
    assert photo.size == oracle.size == (768, 1024)                   # shown portrait, as the browser does
    assert factor == pytest.approx(4000 / 1024) == pytest.approx(oracle_factor)
    assert np.abs(np.asarray(photo, np.int16) - np.asarray(oracle, np.int16)).mean() < 1.5


def test_a_transparent_backdrop_stays_white_in_the_fast_read():
    data = _encode(_scene(2400, 1800, seed=5), "RGBA", "PNG")
    photo = decode_photo(data).image
    top = np.asarray(photo)[: photo.height // 3 - 2]
    assert (top == 255).all()


@pytest.mark.parametrize("bad", [b"", b"not an image", _encode(_scene(6, 6, seed=0), "RGB", "PNG")])
def test_bad_photos_get_the_same_clear_error_as_decode_image(bad):
    with pytest.raises(InvalidInput) as fast:
        decode_photo(bad)
    with pytest.raises(InvalidInput) as slow:
        decode_image(bad)
    assert str(fast.value) == str(slow.value)


def test_a_photo_over_the_pixel_limit_is_refused_before_it_is_decoded():
    data = _encode(_scene(2000, 2000, seed=2), "RGB", "JPEG", quality=80)
    with pytest.raises(InvalidInput, match="over the limit"):
        decode_photo(data, max_pixels=3_000_000)
