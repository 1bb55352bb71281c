"""Reading a phone's photo for the networks: the whole photo decoded then shrunk to its working
copy (decode_image + working_copy, as before), against decode_photo (a JPEG decoded at reduced
scale, the colour profile converted on the small copy)."""
from __future__ import annotations

import io
import statistics
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def _median_ms(read, reps: int) -> float:
    read()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        read()
        times.append((time.perf_counter() - t) * 1e3)
    return round(statistics.median(times), 1)


def _display_p3() -> bytes:
    from models.display_profile import DISPLAY_P3_PRIMARIES, display_profile
    return display_profile(DISPLAY_P3_PRIMARIES, description="Display P3 (made by the benchmark)")


def phone_photo(data: bytes, long_side: int = 4032) -> bytes:
    """A photo enlarged to a phone's size and saved as a phone saves it: JPEG (quality 90) with a
    Display P3 profile (the pixels are not converted: it is the reading's cost that is measured)."""
    from PIL import Image
    img = Image.open(io.BytesIO(data)).convert("RGB")
    scale = long_side / max(img.size)
    big = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
    out = io.BytesIO()
    big.save(out, format="JPEG", quality=90, icc_profile=_display_p3())
    return out.getvalue()


def bench_photos(reps: int = 15) -> dict:
    """A demo street photo enlarged to a phone's 4032 x 3024, stored sideways with EXIF orientation 6
    as a phone stores a portrait photo, as JPEG (quality 90) and PNG, with and without a Display P3
    profile. An enlarged photo holds less fine detail than a real one, so its JPEG decodes a little
    faster than a phone's of the same size would."""
    from PIL import Image

    from models.data import decode_image, decode_photo
    from models.framing import working_copy
    street = Image.open(sorted((PROJECT / "demo" / "samples").glob("*.jpg"))[0]).convert("RGB")
    big = street.resize((4032, 3024), Image.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6
    p3 = _display_p3()
    out = {"photo": "4032x3024, EXIF orientation 6", "reps": reps}
    kinds = (("jpeg", "JPEG", {"quality": 90}), ("jpeg_p3", "JPEG", {"quality": 90, "icc_profile": p3}),
             ("png", "PNG", {"compress_level": 1}), ("png_p3", "PNG", {"compress_level": 1, "icc_profile": p3}))
    for name, fmt, options in kinds:
        buf = io.BytesIO()
        big.save(buf, format=fmt, exif=exif.tobytes(), **options)
        data = buf.getvalue()
        out[f"{name}_bytes"] = len(data)
        out[f"{name}_whole_then_copy_ms"] = _median_ms(lambda: working_copy(decode_image(data)), reps)
        out[f"{name}_decode_photo_ms"] = _median_ms(lambda: decode_photo(data), reps)
    return out
