"""A display ICC profile made byte by byte (ICC v2: a matrix of colourants and gamma curves).

No profile file is on this machine, and ImageCms builds only sRGB, Lab and XYZ profiles. The
tests make narrow-gamut profiles with it, and the photo-reading benchmark a Display P3 one,
as every iPhone photo carries; a profile made by hand says exactly what it holds.
"""
from __future__ import annotations

import struct

D50 = (0.9642, 1.0, 0.8249)
# colourants (columns of the RGB -> XYZ matrix), adapted to D50 as ICC profiles hold them
SRGB_PRIMARIES = [(0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)]
DISPLAY_P3_PRIMARIES = [(0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841)]


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _tag_xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)


def display_profile(primaries, gamma: float = 2.2, description: str = "made by fashion-search") -> bytes:
    """A display profile: these colourants, one gamma for all three channels."""
    name = description.encode() + b"\0"
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    tags = [(b"desc", b"desc" + bytes(4) + struct.pack(">I", len(name)) + name + bytes(8 + 3 + 67)),
            (b"wtpt", _tag_xyz(*D50)), (b"rXYZ", _tag_xyz(*primaries[0])), (b"gXYZ", _tag_xyz(*primaries[1])),
            (b"bXYZ", _tag_xyz(*primaries[2])), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
            (b"cprt", b"text" + bytes(4) + b"none\0")]
    start = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += bytes(-len(data) % 4)
        table += sig + struct.pack(">II", start + len(body), len(data))
        body += data
    header = (struct.pack(">I", start + len(body)) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + bytes(12) + b"acsp" + bytes(28) + _s15(D50[0]) + _s15(D50[1]) + _s15(D50[2]) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + body
