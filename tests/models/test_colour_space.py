"""Photos with an embedded ICC profile are read in sRGB (models/colour_space.py), through
decode_image. The profiles are made byte by byte (models/display_profile.py): no profile
file is on this machine, and one made by hand says exactly what it holds."""
import io

import numpy as np
import pytest
from PIL import Image

from models.data import decode_image
from models.display_profile import D50, SRGB_PRIMARIES
from models.display_profile import display_profile as icc_profile


def dull_primaries(a=0.5):
    """Colourants halfway to white: a narrow gamut, whose pure green is a pale green in sRGB."""
    return [tuple(a * c + (1 - a) * w / 3 for c, w in zip(col, D50)) for col in SRGB_PRIMARIES]


def swatches() -> Image.Image:
    x = np.zeros((16, 32, 3), np.uint8)
    x[:, :8] = (0, 255, 0)
    x[:, 8:16] = (128, 128, 128)
    x[:, 16:24] = (255, 0, 0)
    x[:, 24:] = (255, 255, 255)
    return Image.fromarray(x)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_a_photo_in_a_narrow_gamut_is_read_in_srgb(tmp_path, fmt):
    path = tmp_path / f"photo.{fmt.lower()}"
    options = {"quality": 100} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    swatches().save(path, format=fmt, icc_profile=icc_profile(dull_primaries()), **options)
    x = np.asarray(decode_image(path)).astype(int)
    green, grey, red, white = x[8, 4], x[8, 12], x[8, 20], x[8, 28]
    assert green[1] > 180 and 60 < green[0] < 160 and abs(green[0] - green[2]) <= 6     # paler, still green
    assert red[0] > 180 and 60 < red[1] < 160
    assert grey.max() - grey.min() <= 2 and abs(grey[0] - 128) <= 4                     # neutral stays neutral
    assert (white >= 253).all()


def test_a_photo_whose_profile_is_srgb_and_one_without_a_profile_are_read_as_stored(tmp_path):
    stored = np.asarray(swatches()).astype(int)
    swatches().save(tmp_path / "plain.png")
    assert np.array_equal(np.asarray(decode_image(tmp_path / "plain.png")), stored)
    swatches().save(tmp_path / "srgb.png", icc_profile=icc_profile(SRGB_PRIMARIES))
    assert np.abs(np.asarray(decode_image(tmp_path / "srgb.png")).astype(int) - stored).max() <= 3
    # one that names itself sRGB is not converted at all (a cut the test's dull colourants make visible)
    swatches().save(tmp_path / "named.png", icc_profile=icc_profile(dull_primaries(), description="sRGB IEC61966-2.1"))
    assert np.array_equal(np.asarray(decode_image(tmp_path / "named.png")), stored)


def test_a_damaged_profile_leaves_the_pixels_as_stored(tmp_path):
    stored = np.asarray(swatches())
    for damaged in (b"not a profile at all", icc_profile(dull_primaries())[:150]):
        swatches().save(tmp_path / "damaged.png", icc_profile=damaged)
        assert np.array_equal(np.asarray(decode_image(tmp_path / "damaged.png")), stored)


def test_a_transparent_cutout_with_a_profile_is_converted_and_laid_on_white(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[4:12, 4:12] = (0, 255, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png", icc_profile=icc_profile(dull_primaries()))
    x = np.asarray(decode_image(tmp_path / "cutout.png")).astype(int)
    assert (x[0, 0] == 255).all() and x[8, 8][1] > 180 and 60 < x[8, 8][0] < 160


def test_a_mutated_profile_is_read_as_stored_or_converted_never_another_exception():
    """Random bytes of a profile changed, or the profile cut short: decode_image answers a photo
    (or InvalidInput), never the colour library's own error (a 500 over REST)."""
    from shards.errors import InvalidInput
    rng = np.random.default_rng(7)
    base = icc_profile(dull_primaries())
    for _ in range(300):
        mutated = bytearray(base)
        for _ in range(int(rng.integers(1, 8))):
            mutated[int(rng.integers(0, len(mutated)))] = int(rng.integers(0, 256))
        if rng.random() < 0.2:
            mutated = mutated[: int(rng.integers(0, len(mutated)))]
        buf = io.BytesIO()
        swatches().save(buf, format="PNG", icc_profile=bytes(mutated))
        try:
            assert decode_image(buf.getvalue()).size == (32, 16)
        except InvalidInput:
            pass
