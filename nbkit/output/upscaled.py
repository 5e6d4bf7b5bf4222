"""Upscaled PNGs: read any picture (safely), save the upscaled one beside it (made again by `reproduce`).

An upscaled PNG is a new file next to its source (`<stem>.<upscaler>.png`, or in `out`), never in
its place. Its metadata names the source (file name, the file's sha256, and the sha256 of its image
tokens when nbkit made it) and the upscaler (name, weights sha256, scale, tiling), so that
`nbkit.output.reproduction.reproduce` can make it again from the source beside it. Asking again for an
upscale that is already saved (same source bytes, same weights, same tiling) returns the saved file.

Pictures come from outside: a file that is not an image, is truncated, or is too large to decode is
one clear error; greyscale, 16-bit and palette PNGs are converted to 8-bit RGB (greyscale pictures
are saved greyscale again), and an alpha channel is upscaled and kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from nbkit.generation.token_grids import tokens_sha256
from nbkit.generation.upscale import Progress, UpscaleError, Upscaler
from nbkit.imagefile import ImageRefused, read_image
from nbkit.limits import MAX_SOURCE_PIXELS
from nbkit.output.atomic import atomic_write
from nbkit.output.records import UPSCALED_FROM
from nbkit.output.storage import slugify
from nbkit.png import png_bytes, read_png_metadata

UPSCALER_KEY = "upscaler"


@dataclasses.dataclass(frozen=True)
class Picture:
    """A picture read for upscaling: 8-bit RGB or RGBA pixels and what it came from."""
    pixels: np.ndarray                 # uint8 (h, w, 3) or (h, w, 4)
    grey: bool                         # the file was greyscale: save the result greyscale too
    name: str                          # the file's name (no folder)
    sha256: str                        # of the file's bytes
    metadata: dict[str, Any] | None    # nbkit's PNG metadata, when the file has it


def _to_8bit(image: Image.Image) -> tuple[np.ndarray, bool]:
    """Any Pillow mode → uint8 RGB/RGBA pixels, and whether the picture was greyscale."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):   # 16-bit (and 32-bit) greyscale
        values = np.asarray(image, np.float64)
        top = 255.0 if mode == "F" else 65535.0
        grey = np.round(np.clip(values / top, 0, 1) * 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1), True
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    grey = image.mode in ("1", "L", "LA")
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if image.mode in ("LA", "La", "RGBa") else "RGB")
    pixels = np.asarray(image, np.uint8)
    if pixels.shape[2] == 4 and (pixels[..., 3] == 255).all():
        pixels = pixels[..., :3]    # an alpha channel that hides nothing is not worth a second pass
    return np.ascontiguousarray(pixels), grey


def read_picture(path: str | Path, max_pixels: int = MAX_SOURCE_PIXELS) -> Picture:
    """A picture file → `Picture`, through the guarded reader (nbkit.imagefile: size and kind checked
    from the header first); one-line errors for what is not a readable image within the bounds."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No image at {path}: give the path of a PNG (or JPEG, WebP…) file.")
    data = path.read_bytes()
    try:
        pixels, grey = _to_8bit(read_image(data, path.name, max_pixels))
    except ImageRefused as error:
        raise UpscaleError(str(error)) from None
    try:
        metadata = read_png_metadata(data)
    except ValueError:
        metadata = None
    return Picture(pixels, grey, path.name, hashlib.sha256(data).hexdigest(), metadata)


def _source_record(picture: Picture) -> dict[str, Any]:
    tokens = (picture.metadata or {}).get("tokens")
    return {"file": picture.name, "sha256": picture.sha256,
            "tokens_sha256": tokens_sha256(np.asarray(tokens, np.int32)) if tokens else None}


def _upscaler_record(upscaler: Upscaler) -> dict[str, Any]:
    settings = upscaler.settings
    return {"name": upscaler.model_name, "sha256": upscaler.weights_sha256, "scale": upscaler.scale,
            "tile": settings.tile, "overlap": settings.overlap}


def upscaled_metadata(picture: Picture, upscaler: Upscaler, size: tuple[int, int]) -> dict[str, Any]:
    from nbkit import __version__

    source = picture.metadata or {}
    metadata = {UPSCALED_FROM: _source_record(picture), UPSCALER_KEY: _upscaler_record(upscaler),
                "size": list(size), "nbkit_version": __version__}
    for key in ("prompt", "seed", "model"):   # what a gallery shows, copied from an nbkit source
        if key in source:
            metadata[key] = source[key]
    return metadata


def _stem(name: str) -> str:
    """The name without its extension; a plain file name only (never a path)."""
    return Path(Path(name).name).stem or "image"


def _pixels_to_png(pixels: np.ndarray, grey: bool, metadata: dict[str, Any]) -> bytes:
    image = Image.fromarray(pixels, "RGBA" if pixels.shape[2] == 4 else "RGB")
    if grey:
        image = image.convert("LA" if pixels.shape[2] == 4 else "L")
    return png_bytes(image, metadata)


def _saved_match(path: Path, source: dict[str, Any], upscaler: dict[str, Any]) -> bool:
    try:
        metadata = read_png_metadata(path)
    except (ValueError, OSError):
        return False
    return metadata.get(UPSCALED_FROM) == source and metadata.get(UPSCALER_KEY) == upscaler


def upscaled_label(upscaler: Upscaler) -> str:
    """What an upscaled file's name says after its source's stem: the registered upscaler's name
    (`esrgan-x4`), `esrgan-x<scale>` for one read from a weights file (`model.safetensors` says nothing),
    else the upscaler's own name. The PNG's metadata names the weights exactly (name and sha256)."""
    from nbkit.weights.registry import MODELS, UPSCALER

    name = upscaler.model_name
    registered = MODELS.get(name)
    if registered is not None and registered.kind == UPSCALER:
        return name
    if upscaler.weights_path is not None or Path(name).suffix in (".pth", ".pt", ".safetensors"):
        return f"esrgan-x{upscaler.scale}"
    return slugify(Path(name).name, 40)


def _save_beside(folder: Path, picture: Picture, upscaler: Upscaler, pixels: np.ndarray) -> Path:
    """`<stem>.<upscaler>.png` in `folder` (then `-2`, `-3`… when taken by something else)."""
    metadata = upscaled_metadata(picture, upscaler, (pixels.shape[1], pixels.shape[0]))
    data = _pixels_to_png(pixels, picture.grey, metadata)
    base = f"{_stem(picture.name)}.{upscaled_label(upscaler)}"
    for attempt in range(1, 1000):
        path = folder / (f"{base}.png" if attempt == 1 else f"{base}-{attempt}.png")
        try:
            atomic_write(path, data)
            return path
        except FileExistsError:
            if _saved_match(path, metadata[UPSCALED_FROM], metadata[UPSCALER_KEY]):
                return path
    raise FileExistsError(f"No free name for {base}.png in {folder}.")


def _already_saved(folder: Path, picture: Picture, upscaler: Upscaler) -> Path | None:
    base = f"{_stem(picture.name)}.{upscaled_label(upscaler)}"
    source, record = _source_record(picture), _upscaler_record(upscaler)
    for path in sorted(folder.glob(f"{base}*.png")):
        if _saved_match(path, source, record):
            return path
    return None


def upscale_files(upscaler: Upscaler, sources: Sequence[str | Path], out: str | Path | None = None,
                  progress: Progress | None = None) -> list[Path]:
    """Upscales picture files together (one batch stream over the devices) and saves each result beside
    its source (or in `out`); returns the saved paths in order. Every file is read and checked before
    anything is computed; an upscale already saved is returned as it is."""
    limit = getattr(getattr(upscaler, "settings", None), "max_pixels", MAX_SOURCE_PIXELS)
    pictures = [read_picture(source, limit) for source in sources]
    folders = [Path(out) if out is not None else Path(source).parent for source in sources]
    upscaler.load()
    saved: list[Path | None] = [_already_saved(folder, picture, upscaler) if folder.is_dir() else None
                                for folder, picture in zip(folders, pictures, strict=True)]
    todo = [i for i, path in enumerate(saved) if path is None]
    results = upscaler.upscale([pictures[i].pixels for i in todo], progress) if todo else []
    for i, pixels in zip(todo, results, strict=True):
        folders[i].mkdir(parents=True, exist_ok=True)
        saved[i] = _save_beside(folders[i], pictures[i], upscaler, pixels)
    return saved


def save_upscaled(upscaler: Upscaler, source: str | Path, out: str | Path | None = None) -> Path:
    """One picture file → its upscaled PNG beside it (or in `out`); see `upscale_files`."""
    return upscale_files(upscaler, [source], out)[0]
