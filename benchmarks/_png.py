"""A tiny RGB raster canvas that saves itself as a PNG, with the standard library only.

Just enough drawing for a line chart: rectangles, thick lines, dashed lines and text
in the 5x9 bitmap font of `_font`, scaled by whole pixels. The PNG is written by hand
(signature, IHDR, one zlib-compressed IDAT, IEND), which is all the format needs.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from . import _font

Color = tuple[int, int, int]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Canvas:
    """An RGB image held in memory, white to start with.

    Args:
        width: Width in pixels.
        height: Height in pixels.
        background: The colour everything starts as.
    """

    def __init__(self, width: int, height: int, background: Color = (255, 255, 255)) -> None:
        self.width = width
        self.height = height
        self._pixels = bytearray(bytes(background) * (width * height))

    def pixel(self, x: int, y: int, color: Color) -> None:
        """Paint one pixel; points outside the canvas are ignored."""
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self._pixels[i : i + 3] = bytes(color)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        """Fill the rectangle with corners (x0, y0) and (x1, y1), both included."""
        x0, x1 = sorted((max(0, x0), min(self.width - 1, x1)))
        y0, y1 = sorted((max(0, y0), min(self.height - 1, y1)))
        row = bytes(color) * (x1 - x0 + 1)
        for y in range(y0, y1 + 1):
            i = 3 * (y * self.width + x0)
            self._pixels[i : i + len(row)] = row

    def line(
        self,
        x0: int,
        y0: int,
        x1: int,
        y1: int,
        color: Color,
        width: int = 1,
        dash: int = 0,
    ) -> None:
        """Draw a straight line (Bresenham), `width` pixels thick, dashed if `dash` > 0."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        half = (width - 1) // 2
        step = 0
        while True:
            if not dash or (step // dash) % 2 == 0:
                self.rect(x0 - half, y0 - half, x0 - half + width - 1, y0 - half + width - 1, color)
            if x0 == x1 and y0 == y1:
                return
            step += 1
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    @staticmethod
    def text_size(text: str, scale: int = 1) -> tuple[int, int]:
        """Return the width and height `text` takes when drawn at `scale`."""
        if not text:
            return 0, _font.HEIGHT * scale
        return (len(text) * (_font.WIDTH + 1) - 1) * scale, _font.HEIGHT * scale

    def text(
        self,
        x: int,
        y: int,
        text: str,
        color: Color = (0, 0, 0),
        scale: int = 1,
        anchor: str = "left",
    ) -> None:
        """Draw one line of text with its top at `y`.

        Args:
            x: Where the text starts (``anchor="left"``), is centred
                (``"center"``) or ends (``"right"``).
            y: The top of the text.
            text: The text (printable ASCII; anything else is drawn as a box).
            color: Its colour.
            scale: Pixels per font pixel.
            anchor: ``"left"``, ``"center"`` or ``"right"``.
        """
        width, _ = self.text_size(text, scale)
        if anchor == "center":
            x -= width // 2
        elif anchor == "right":
            x -= width
        for char in text:
            for row, bits in enumerate(_font.glyph(char)):
                for col, ink in enumerate(bits):
                    if ink:
                        px, py = x + col * scale, y + row * scale
                        self.rect(px, py, px + scale - 1, py + scale - 1, color)
            x += (_font.WIDTH + 1) * scale

    def png(self) -> bytes:
        """Encode the image as a PNG (8-bit RGB, no interlace)."""
        stride = 3 * self.width
        raw = b"".join(
            b"\x00" + bytes(self._pixels[y * stride : (y + 1) * stride]) for y in range(self.height)
        )
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            PNG_SIGNATURE
            + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw, 9))
            + _chunk(b"IEND", b"")
        )

    def save(self, path: str | Path) -> None:
        """Write the image to `path` as a PNG, creating its directory if needed."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.png())


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
