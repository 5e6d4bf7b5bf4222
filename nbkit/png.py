"""PNG files that carry their metadata: the one file format every layer reads (a saved image is a
source for variations, a record to reproduce, a gallery entry).

Each PNG holds one readable iTXt chunk per metadata key (what image viewers and
`Image.open(...).text` show) and one `nbkit` chunk with all of it as JSON, which is what
`read_png_metadata` returns, so ints, floats, None and nested dicts come back exactly.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from nbkit.imagefile import ImageRefused, png_info

METADATA_KEY = "nbkit"  # the PNG text chunk holding the whole metadata as JSON


def check_pixels(image: object, what: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        described = (f"a {image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
                     else f"a {type(image).__name__}")
        raise ValueError(f"{what} must be a uint8 array of shape (height, width, 3), got {described}.")
    return image


def utf8_safe(value: Any) -> Any:
    """JSON read from a file with every lone surrogate (a "\\ud800" escape: not a character, and not
    UTF-8) replaced by U+FFFD, so that what an older nbkit saved can be sent as JSON again."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
        return value
    if isinstance(value, list):
        return [utf8_safe(item) for item in value]
    if isinstance(value, dict):
        return {utf8_safe(key): utf8_safe(item) for key, item in value.items()}
    return value


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
        image = Image.fromarray(check_pixels(image, "image"))
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
    """The metadata dict that `png_bytes` stored, exactly as it was given. Read through the guarded
    reader without decoding the pixels (nbkit.imagefile.png_info): ValueError for a file that is not a
    readable PNG within the bounds, FileNotFoundError where there is no file."""
    is_bytes = isinstance(path_or_bytes, (bytes, bytearray))
    name = "<PNG bytes>" if is_bytes else Path(path_or_bytes).name
    try:
        text = png_info(path_or_bytes, name)
    except ImageRefused as error:
        raise ValueError(f"{error} (not a readable PNG)") from None
    if METADATA_KEY not in text:
        raise ValueError(f"{name} has no {METADATA_KEY!r} metadata (not written by nbkit, or stripped).")
    try:
        metadata = utf8_safe(json.loads(text[METADATA_KEY]))
    except (ValueError, RecursionError) as error:
        raise ValueError(f"{name}: the {METADATA_KEY!r} metadata is not valid JSON: "
                         f"{str(error)[:200] or 'nested too deeply'}") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{name}: the {METADATA_KEY!r} metadata is not a JSON object.")
    return metadata
