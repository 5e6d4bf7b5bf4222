"""Pixels → PNG files' contents: grids with a caption, and PNGs that carry their metadata.

Each PNG holds one readable iTXt chunk per metadata key (what image viewers and
`Image.open(...).text` show) and one `nbkit` chunk with all of it as JSON, which is what
`read_png_metadata` returns, so ints, floats, None and nested dicts come back exactly.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

METADATA_KEY = "nbkit"  # the PNG text chunk holding the whole metadata as JSON
CAPTION_MARGIN = 8  # pixels around the caption text


def _check_pixels(image: object, what: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        described = (f"a {image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
                     else f"a {type(image).__name__}")
        raise ValueError(f"{what} must be a uint8 array of shape (height, width, 3), got {described}.")
    return image


def _caption_font(tile_width: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # 20 px text under 256 px tiles: readable in a notebook without dwarfing the images.
    return ImageFont.load_default(size=max(10, round(tile_width * 20 / 256)))


def _wrap(text: str, font, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels; words wider than a line are cut by character."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = ""
        for char in word:  # the word alone may still be too wide
            if line and font.getlength(line + char) > width:
                lines.append(line)
                line = ""
            line += char
    return lines + [line] if line else lines


def make_grid(images: Sequence[np.ndarray], columns: int | None = None,
              caption: str | None = None) -> Image.Image:
    """Tiles equal-size uint8 RGB images, row by row, with an optional caption (the prompt)
    wrapped in a white band under the grid. Tiles are copied pixel for pixel."""
    images = [_check_pixels(image, f"image {i}") for i, image in enumerate(images)]
    if not images:
        raise ValueError("make_grid needs at least one image, got none.")
    height, width = images[0].shape[:2]
    for i, image in enumerate(images):
        if image.shape[:2] != (height, width):
            raise ValueError(f"All images must have the same size: image 0 is {height}×{width}, "
                             f"image {i} is {image.shape[0]}×{image.shape[1]}.")
    if columns is None:
        columns = math.ceil(math.sqrt(len(images)))
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a whole number ≥ 1, got {columns!r}.")
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    pixels = np.full((rows * height, columns * width, 3), 255, np.uint8)  # white where no image
    for i, image in enumerate(images):
        row, column = divmod(i, columns)
        pixels[row * height:(row + 1) * height, column * width:(column + 1) * width] = image
    grid = Image.fromarray(pixels)
    if not caption or not caption.strip():
        return grid

    font = _caption_font(width)
    if not isinstance(font, ImageFont.FreeTypeFont):  # bitmap fallback font: Latin-1 only
        caption = caption.encode("latin-1", "replace").decode("latin-1")
    lines = _wrap(caption, font, grid.width - 2 * CAPTION_MARGIN)
    line_height = font.getbbox("Ágjy|")[3] + 4
    band = len(lines) * line_height + 2 * CAPTION_MARGIN
    framed = Image.new("RGB", (grid.width, grid.height + band), "white")
    framed.paste(grid, (0, 0))
    draw = ImageDraw.Draw(framed)
    for i, line in enumerate(lines):
        top = grid.height + CAPTION_MARGIN + i * line_height
        draw.text((CAPTION_MARGIN, top), line, font=font, fill="black")
    return framed


def _readable(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates → "?"


def _check_keyword(key: object) -> str:
    # PNG keywords: 1–79 Latin-1 printable characters, no leading/trailing/double spaces.
    ok = (isinstance(key, str) and 0 < len(key) < 80 and key != METADATA_KEY and key == key.strip()
          and "  " not in key and all(32 <= ord(c) <= 126 or 161 <= ord(c) <= 255 for c in key))
    if not ok:
        raise ValueError(f"Metadata key {key!r} cannot be a PNG text keyword (1–79 printable Latin-1 "
                         f"characters, no leading, trailing or double spaces, not {METADATA_KEY!r}).")
    return key


def png_bytes(image: np.ndarray | Image.Image, metadata: Mapping[str, Any] | None = None) -> bytes:
    """PNG file contents, with `metadata` (JSON-serializable) as text chunks."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(_check_pixels(image, "image"))
    info = PngImagePlugin.PngInfo()
    if metadata is not None:
        try:
            everything = json.dumps(dict(metadata), ensure_ascii=True)  # ASCII: any string survives
        except (TypeError, ValueError) as error:
            raise ValueError(f"PNG metadata must be JSON-serializable: {error}") from error
        for key, value in metadata.items():
            info.add_itxt(_check_keyword(key), _readable(value))
        info.add_itxt(METADATA_KEY, everything)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_png_metadata(path_or_bytes: str | Path | bytes) -> dict[str, Any]:
    """The metadata dict that `png_bytes` stored, exactly as it was given."""
    is_bytes = isinstance(path_or_bytes, (bytes, bytearray))
    name = "<PNG bytes>" if is_bytes else str(path_or_bytes)
    try:
        with Image.open(io.BytesIO(path_or_bytes) if is_bytes else path_or_bytes) as image:
            text = dict(getattr(image, "text", {}))
    except (OSError, SyntaxError) as error:  # not an image, or a damaged one
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(f"{name} is not a readable PNG: {error}") from error
    if METADATA_KEY not in text:
        raise ValueError(f"{name} has no {METADATA_KEY!r} metadata (not written by nbkit, or stripped).")
    try:
        metadata = json.loads(text[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise ValueError(f"{name}: the {METADATA_KEY!r} metadata is not valid JSON: {error}") from error
    if not isinstance(metadata, dict):
        raise ValueError(f"{name}: the {METADATA_KEY!r} metadata is not a JSON object.")
    return metadata
