"""The one reader of image files: every picture nbkit reads from outside (saved runs, sources to vary or
upscale, pictures to rerank, PNG metadata) is opened here, so every one gets the same checks.

Pillow's `Image.open` reads only the header; pixels are decoded by `load()`, which a PNG's `.text`
also calls. So `opened_image` checks what the header says (format, size, aspect ratio, frames, mode)
before anything is decoded, and reading metadata never decodes at all (`png_info`): a 475-byte PNG of
1×100000 pixels or a 494 KB one of 13000×13000 is refused from its first bytes. `read_image` then
decodes, turning Pillow's many ways to fail (truncated data, decompression bombs, recursion in a
damaged file) into one `ImageRefused` that says what to give instead. The bounds are in nbkit.limits.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from nbkit.limits import IMAGE_FORMATS, MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS

# Modes whose pixels nbkit can turn into 8-bit RGB(A): Pillow's names for 1-, 2-, 4-, 8- and 16-bit
# greyscale, palette, RGB(A), CMYK and YCbCr pictures of the formats read.
READABLE_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
                  "I", "I;16", "I;16B", "I;16L", "F")
# What Pillow raises for a file it cannot read (a damaged or hostile one may raise any of these).
_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
               RecursionError, MemoryError, ZeroDivisionError, OverflowError)


class ImageRefused(ValueError):
    """A picture nbkit will not read: not an image, damaged, too large, too narrow, animated, or of a
    kind it cannot convert. The message is one line that names the file and says what to give."""


def _reason(error: BaseException) -> str:
    if isinstance(error, Image.UnidentifiedImageError):    # its message names the stream, not the file
        return f"not a {', '.join(IMAGE_FORMATS)} file"
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def check_header(image: Image.Image, name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """What an opened, not yet decoded, picture says of itself, against the bounds."""
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageRefused(f"{name} is {width}×{height} pixels: it holds no picture.")
    if width * height > max_pixels:
        raise ImageRefused(f"{name} is {width}×{height} pixels, over the {max_pixels:,} this takes: "
                           "shrink it first.")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageRefused(f"{name} is {width}×{height} pixels, longer than {MAX_ASPECT_RATIO}:1: "
                           "crop it first.")
    if getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) != 1:
        raise ImageRefused(f"{name} is animated: give a still picture (one frame).")
    if image.mode not in READABLE_MODES:
        raise ImageRefused(f"{name} is a {image.mode} picture, which nbkit does not read: save it as an "
                           "8-bit RGB PNG.")


@contextlib.contextmanager
def opened_image(source: str | Path | bytes, name: str | None = None,
                 max_pixels: int = MAX_IMAGE_PIXELS) -> Iterator[Image.Image]:
    """A picture file (path or bytes) opened, with its header checked and nothing decoded yet.
    FileNotFoundError for a path where there is no file; ImageRefused for anything else wrong."""
    is_bytes = isinstance(source, (bytes, bytearray))
    name = name or ("the image" if is_bytes else Path(source).name)
    if not is_bytes and not Path(source).is_file():
        raise FileNotFoundError(f"No image file {name}: give the path of a PNG (or JPEG, WebP) file.")
    stream = io.BytesIO(source) if is_bytes else open(source, "rb")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = Image.open(stream, formats=IMAGE_FORMATS)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise ImageRefused(f"{name} is too large to read safely: shrink it first.") from None
            except _UNREADABLE as error:
                raise ImageRefused(f"{name} is not a readable image ({_reason(error)}): give a PNG, JPEG "
                                   "or WebP file that opens in an image viewer.") from None
        with image:
            try:
                check_header(image, name, max_pixels)
            except ImageRefused:
                raise
            except _UNREADABLE as error:     # counting frames reads on through the file
                raise ImageRefused(f"{name} is damaged ({_reason(error)}).") from None
            yield image
    finally:
        stream.close()


def read_image(source: str | Path | bytes, name: str | None = None,
               max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """A picture file decoded (checked by `opened_image` first): a loaded PIL image, its mode as stored."""
    with opened_image(source, name, max_pixels) as image:
        shown = name or ("the image" if isinstance(source, (bytes, bytearray)) else Path(source).name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
                return image.copy()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRefused(f"{shown} is too large to read safely: shrink it first.") from None
        except _UNREADABLE as error:          # truncated, damaged, a decoder that gives up
            raise ImageRefused(f"{shown} is not a readable image ({_reason(error)}): give a PNG, JPEG "
                               "or WebP file that opens in an image viewer.") from None


def read_rgb(source: str | Path | bytes, name: str | None = None,
             max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """`read_image` as 8-bit RGB (what CLIP, grids and comparisons take)."""
    image = read_image(source, name, max_pixels)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):   # 16/32-bit greyscale: scale, not clip
        top = 255.0 if image.mode == "F" else 65535.0
        values = np.clip(np.asarray(image, np.float32) / top, 0, 1)
        image = Image.fromarray(np.round(values * 255).astype(np.uint8), "L")
    return image.convert("RGB")


def png_info(source: str | Path | bytes, name: str | None = None) -> dict:
    """The text chunks a PNG holds before its pixels (where nbkit writes its metadata), read without
    decoding the pixels (`.text` would decode them all). Chunks after the pixels are not read."""
    with opened_image(source, name) as image:
        if image.format != "PNG":
            raise ImageRefused(f"{name or 'the image'} is a {image.format} file, not a PNG.")
        return {key: value for key, value in image.info.items() if isinstance(value, str)}
