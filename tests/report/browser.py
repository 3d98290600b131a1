"""Open a page in headless Chromium: a screenshot and the console messages, nothing else.

Chromium logs every console message (any level, and uncaught exceptions) on stderr as
`...:CONSOLE:<line>] "<text>", source: ...`; the report has no script, so any such line is
a fault. Install on Debian with `apt-get install -y chromium`.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CONSOLE_LINE = re.compile(r":CONSOLE(?::|\()\d+\)?\] (.*)")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def open_page(browser: str, page: Path, screenshot: Path, size: str = "1100,1600") -> list[str]:
    """Render `page` into `screenshot` (PNG); return the console messages it logged."""
    profile = screenshot.parent / f"{screenshot.stem}-profile"
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={size}",
            f"--screenshot={screenshot}",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={profile}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert screenshot.is_file(), f"no screenshot; chromium said: {done.stderr[-2000:]}"
    return [m.group(1) for m in CONSOLE_LINE.finditer(done.stderr)]


def png_pixels(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes) into a height x width x n array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and color in (2, 6), f"unsupported PNG: depth {depth}, colour {color}"
    channels = 3 if color == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, -1)
    return _unfilter(raw, width, channels).reshape(height, width, channels)


def _unfilter(raw: np.ndarray, width: int, bpp: int) -> np.ndarray:
    out = np.zeros((raw.shape[0], width * bpp), dtype=np.int32)
    previous = np.zeros(width * bpp, dtype=np.int32)
    for y in range(raw.shape[0]):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if kind == 0:
            row = line
        elif kind == 2:
            row = (line + previous) & 0xFF
        else:
            row = _sequential(kind, line, previous, bpp)
        out[y] = row
        previous = row
    return out.astype(np.uint8)


def _sequential(kind: int, line: np.ndarray, up: np.ndarray, bpp: int) -> np.ndarray:
    """Sub, Average and Paeth depend on the pixel to the left: one pixel at a time."""
    row = line.copy()
    for x in range(0, len(row), bpp):
        left = row[x - bpp : x] if x else np.zeros(bpp, dtype=np.int32)
        above = up[x : x + bpp]
        upper_left = up[x - bpp : x] if x else np.zeros(bpp, dtype=np.int32)
        if kind == 1:
            predictor = left
        elif kind == 3:
            predictor = (left + above) // 2
        else:
            p = left + above - upper_left
            pa, pb, pc = abs(p - left), abs(p - above), abs(p - upper_left)
            predictor = np.where(
                (pa <= pb) & (pa <= pc), left, np.where(pb <= pc, above, upper_left)
            )
        row[x : x + bpp] = (row[x : x + bpp] + predictor) & 0xFF
    return row
