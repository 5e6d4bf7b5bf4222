"""Pixels → bigger pixels: the upscaling step after decoding (Real-ESRGAN, `nbkit.models.esrgan`).

`Upscaler` holds where its weights are and loads them only when something is upscaled, so plain
generation never holds them (like the VQGAN encoder). Every picture is cut into windows of one
shape (`TileSettings.tile` pixels a side, or the whole picture when it is smaller): a 256×256 image
is one window, so every 256×256 call runs the same compiled program, and a 256×2048 panorama is
sixteen overlapping 256×256 windows run a batch at a time, so device memory depends on the window
and batch, not on the picture. Neighbouring windows share `overlap` input pixels, where their outputs
are cross-faded with complementary linear weights over the middle half of the shared strip: no
output pixel is taken from the outer quarter next to a window's edge (where the zero padding beyond
the window is felt), and none changes abruptly at a cut, which hides the seam (see `bench/bench_upscale.py
--seams` for the measured difference to an untiled run).

Batches of windows are split over the mesh's data axis like generation's rows (`nbkit.sharding`);
the weights are copied to every device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nbkit.generation import sharding
from nbkit.limits import MAX_SOURCE_PIXELS


class UpscaleError(ValueError):
    """An image the upscaler cannot take (shape, type, size); the message says what to do."""


@dataclasses.dataclass(frozen=True)
class TileSettings:
    """How pictures are cut into windows. A window is `tile` input pixels a side (a picture smaller
    than that is one window of its own size); neighbours share `overlap` pixels, blended; `batch`
    windows per device go through together; pictures over `max_pixels` input pixels are refused
    (the output is held in host memory as float32: 16·3·4 bytes per input pixel at ×4)."""
    tile: int = 256
    overlap: int = 32
    batch: int = 4
    max_pixels: int = MAX_SOURCE_PIXELS
    ramp: float = 0.5   # the middle part of each overlap over which neighbours cross-fade

    def __post_init__(self):
        if not (isinstance(self.tile, int) and isinstance(self.overlap, int) and 0 <= self.overlap
                and self.tile >= 2 * self.overlap + 16):
            raise ValueError(f"tile ({self.tile}) must be at least 16 + twice the overlap ({self.overlap}).")
        if not (isinstance(self.batch, int) and self.batch >= 1 and self.max_pixels >= 1):
            raise ValueError(f"batch ({self.batch}) and max_pixels ({self.max_pixels}) must be ≥ 1.")


def window_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where windows of `tile` pixels start along an axis of `length` pixels so that they cover it and
    neighbours share at least `overlap` pixels; spread evenly, the last one ending at the end."""
    if length <= tile:
        return [0]
    count = math.ceil((length - tile) / (tile - overlap)) + 1
    return [round(k * (length - tile) / (count - 1)) for k in range(count)]


def _ramp(shared: int, ramp: float) -> np.ndarray:
    """Rising weights over `shared` pixels: 0 over the outer part, linear over the middle `ramp`
    fraction, 1 beyond; the neighbour's falling weights are 1 minus these."""
    width = max(1.0, shared * ramp)
    positions = np.arange(shared, dtype=np.float32) + 0.5 - (shared - width) / 2
    return np.clip(positions / width, 0, 1)


def blend_weights(starts: list[int], window: int, scale: int, ramp: float = 0.5) -> list[np.ndarray]:
    """Each window's weight along one axis, in output pixels: 1 inside; across each part it shares
    with a neighbour, a ramp complementary to the neighbour's (they sum to 1) that leaves out the
    outer quarter next to each window's edge, where the zero padding beyond the window is felt."""
    size = window * scale
    weights = []
    for k, start in enumerate(starts):
        weight = np.ones(size, np.float32)
        if k > 0:   # shared with the previous window: [starts[k], starts[k-1] + window)
            shared = (starts[k - 1] + window - start) * scale
            weight[:shared] = _ramp(shared, ramp)
        if k + 1 < len(starts):
            shared = (start + window - starts[k + 1]) * scale
            weight[size - shared:] *= 1 - _ramp(shared, ramp)
        weights.append(weight)
    return weights


def _check_image(image: object, index: int) -> np.ndarray:
    if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3
            or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1):
        described = (f"a {image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
                     else f"a {type(image).__name__}")
        raise UpscaleError(f"image {index} must be a uint8 array of shape (height, width, 3 or 4), got "
                           f"{described}. Read files with nbkit.output.upscaled.read_picture.")
    return image


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 24):
            hasher.update(chunk)
    return hasher.hexdigest()


Progress = Callable[[int, int], None]   # (windows done, windows in all); may raise to stop


class Upscaler:
    """Real-ESRGAN by name (`esrgan-x4`, `esrgan-anime`, `esrgan-x2`, `esrgan-fast`), weights file or
    folder. Nothing is read until the first `upscale` (or `load`)."""

    def __init__(self, model: str | Path = "esrgan-x4", cache: str | Path | None = None,
                 dtype: Any = None, mesh: jax.sharding.Mesh | None = None,
                 settings: TileSettings = TileSettings(), progress: bool = True):
        self.model_name, self.settings = str(model), settings
        self._asked, self._cache, self._dtype, self._mesh = model, cache, dtype, mesh
        self._show_progress = progress
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any, Any] | None = None   # (module, params, jitted apply)
        self.weights_path: Path | None = None
        self.weights_sha256: str | None = None

    @classmethod
    def from_params(cls, model: Any, params: Any, name: str = "in-memory", sha256: str | None = None,
                    settings: TileSettings = TileSettings(),
                    mesh: jax.sharding.Mesh | None = None) -> Upscaler:
        """An upscaler over weights already in memory (benchmarks, random weights)."""
        upscaler = cls(name, settings=settings, mesh=mesh)
        upscaler._mesh = mesh or sharding.make_mesh()
        upscaler._loaded = (model, sharding.put_tree(params, upscaler._mesh), jax.jit(model.apply))
        upscaler.weights_sha256 = sha256
        return upscaler

    # ---- loading (first use only)

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def load(self) -> Upscaler:
        """Fetches (or finds) the weights, reads them and places them on every device; once."""
        with self._lock:
            if self._loaded is None:
                from nbkit.weights import hub
                from nbkit.weights.loaders import load_esrgan
                from nbkit.weights.registry import MODELS

                path = hub.fetch_upscaler(self._asked, self._cache, self._show_progress)
                mesh = self._mesh or sharding.make_mesh()
                dtype = self._dtype or (jnp.float32 if jax.devices()[0].platform == "cpu" else jnp.bfloat16)
                model, params = load_esrgan(path, dtype)
                params = sharding.put_tree(params, mesh)
                registered = MODELS.get(self.model_name)
                pinned = registered.release.sha256 if registered and registered.release else None
                self.weights_path, self.weights_sha256 = path, pinned or _sha256(path)
                self._mesh = mesh
                self._loaded = (model, params, jax.jit(model.apply))
        return self

    @property
    def scale(self) -> int:
        return self.load()._loaded[0].config.scale

    @property
    def mesh(self) -> jax.sharding.Mesh:
        return self.load()._mesh

    # ---- running

    def _bucket(self, count: int) -> int:
        """Windows per call: a power of two times the data-parallel device count, at most `batch`
        per device, so that few batch sizes (few compiled programs) ever occur."""
        devices = sharding.data_size(self.mesh)
        per_device = min(self.settings.batch, 1 << max(0, math.ceil(math.log2(math.ceil(count / devices)))))
        return per_device * devices

    def _run(self, windows: np.ndarray) -> np.ndarray:
        """(n, h, w, 3) float32 in [0, 1] → (n, s·h, s·w, 3) float32, raw (not clipped)."""
        model, params, apply = self._loaded
        size = self._bucket(len(windows))
        padded = np.zeros((size,) + windows.shape[1:], np.float32)
        padded[:len(windows)] = windows
        batch = sharding.put(padded, sharding.rows(self.mesh))
        return sharding.to_host(apply({"params": params}, batch))[:len(windows)]

    def upscale_float(self, images: Sequence[np.ndarray],
                      progress: Progress | None = None) -> list[np.ndarray]:
        """(h, w, 3) float32 images in [0, 1] → (s·h, s·w, 3) float32, unclipped, tiled and blended."""
        self.load()
        scale, settings = self.scale, self.settings
        plans, jobs = [], []   # per image: (window h, w, row starts, column starts); jobs: (image, r, c)
        for index, image in enumerate(images):
            height, width = image.shape[:2]
            if height * width > settings.max_pixels:
                raise UpscaleError(
                    f"image {index} is {width}×{height} = {height * width:,} pixels; the upscaler takes at "
                    f"most {settings.max_pixels:,} (TileSettings.max_pixels, set by host memory for the "
                    f"{width * scale}×{height * scale} result). Crop or shrink it first.")
            window_h, window_w = min(height, settings.tile), min(width, settings.tile)
            if scale < 4 and (window_h % (4 // scale) or window_w % (4 // scale)):
                raise UpscaleError(f"image {index} is {width}×{height}: the ×{scale} model needs sides "
                                   f"divisible by {4 // scale}. Crop a pixel off.")
            rows = window_starts(height, settings.tile, settings.overlap)
            columns = window_starts(width, settings.tile, settings.overlap)
            plans.append((window_h, window_w, rows, columns))
            jobs += [(index, r, c) for r in range(len(rows)) for c in range(len(columns))]
        outputs = [np.zeros((image.shape[0] * scale, image.shape[1] * scale, 3), np.float32)
                   for image in images]
        weights = [(blend_weights(p[2], p[0], scale, settings.ramp),
                    blend_weights(p[3], p[1], scale, settings.ramp)) for p in plans]
        by_shape: dict[tuple[int, int], list] = {}
        for job in jobs:
            by_shape.setdefault(plans[job[0]][:2], []).append(job)
        done, total = 0, len(jobs)
        per_call = settings.batch * sharding.data_size(self.mesh)
        for (window_h, window_w), shaped in by_shape.items():
            for first in range(0, len(shaped), per_call):
                group = shaped[first:first + per_call]
                windows = np.stack([images[i][plans[i][2][r]:plans[i][2][r] + window_h,
                                              plans[i][3][c]:plans[i][3][c] + window_w] for i, r, c in group])
                for (i, r, c), result in zip(group, self._run(windows), strict=True):
                    top, left = plans[i][2][r] * scale, plans[i][3][c] * scale
                    weight = weights[i][0][r][:, None, None] * weights[i][1][c][None, :, None]
                    outputs[i][top:top + window_h * scale, left:left + window_w * scale] += weight * result
                done += len(group)
                if progress:
                    progress(done, total)
        return outputs

    def upscale(self, images: Sequence[np.ndarray], progress: Progress | None = None) -> list[np.ndarray]:
        """uint8 RGB (h, w, 3) or RGBA (h, w, 4) images → uint8 images `scale` times larger; an alpha
        channel is upscaled by the same network (as a grey picture) and kept."""
        images = [_check_image(image, i) for i, image in enumerate(images)]
        colour = [image[..., :3].astype(np.float32) / 255 for image in images]
        alphas = {i: np.repeat(image[..., 3:].astype(np.float32) / 255, 3, axis=-1)
                  for i, image in enumerate(images) if image.shape[2] == 4}
        results = self.upscale_float(colour + list(alphas.values()), progress)
        out = [to_uint8(result) for result in results[:len(images)]]
        for (i, _), alpha in zip(alphas.items(), results[len(images):], strict=True):
            out[i] = np.concatenate([out[i], to_uint8(alpha.mean(axis=-1, keepdims=True))], axis=-1)
        return out


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """What the reference saves: round(clip(x, 0, 1) · 255)."""
    return np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)
