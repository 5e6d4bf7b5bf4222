"""Pixels → pictures to look at: grids of images with a caption. (PNGs with metadata: `nbkit.png`.)"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from nbkit.png import check_pixels

CAPTION_MARGIN = 8  # pixels around the caption text


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
    images = [check_pixels(image, f"image {i}") for i, image in enumerate(images)]
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
