"""Bad input files built in code for tests: corrupt images, lying PNG headers, broken LUTs."""

import io
import struct
import zlib

from PIL import Image


def png_claiming(width: int, height: int) -> bytes:
    """A real 8x8 PNG whose IHDR is patched to claim width x height (CRC fixed up)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 90, 60)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8 + 4  # signature, then chunk length; the type 'IHDR' follows
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 4 + 13])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def corrupt_png() -> bytes:
    """The start of a valid PNG, cut off in the middle of its pixel data."""
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()[:200]


def not_an_image() -> bytes:
    return b"this is a text file, not a picture\n" * 10


def broken_cube() -> str:
    return 'TITLE "broken"\nLUT_3D_SIZE 2\n0 0 0\n1 oops 0\n'


def png_with_text(key: str, text: str, compressed: bool = False) -> bytes:
    """An 8x8 PNG carrying `text` in a text chunk named `key`."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(key, text, zip=compressed)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
