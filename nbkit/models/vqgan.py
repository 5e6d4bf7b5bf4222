"""VQGAN in Flax: a 16×16 grid of image tokens → a 256×256 RGB image, and back.

Generation only needs the codebook, `post_quant_conv` and the decoder (taming-
transformers' architecture, as published in `dalle-mini/vqgan_imagenet_f16_16384`), so
`VQGANDecoder` holds only those. The encoder and `quant_conv` (image → tokens) are a
separate module, `VQGANEncoder`, loaded only when an image has to be encoded. Module names
follow that checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageOps

from nbkit.models.config import CONFIG_FILE, config_from_dict, read_json


@dataclass(frozen=True)
class VQGANConfig:
    """The architecture, read from the checkpoint's `config.json`."""

    ch: int = 128
    out_ch: int = 3
    num_res_blocks: int = 2
    resolution: int = 256
    z_channels: int = 256
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    attn_resolutions: tuple[int, ...] = (16,)
    n_embed: int = 1024
    embed_dim: int = 256
    resamp_with_conv: bool = True

    def __post_init__(self):
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))

    @classmethod
    def from_folder(cls, folder: str | Path) -> VQGANConfig:
        values = read_json(Path(folder) / CONFIG_FILE, "a VQGAN model folder needs its config.json")
        return config_from_dict(cls, values)

    @property
    def grid_size(self) -> int:
        """Tokens per side: the image is downsampled once per resolution level but the last."""
        return self.resolution // 2 ** (len(self.ch_mult) - 1)


# dalle-mini/vqgan_imagenet_f16_16384: the default architecture with a 16384-code book.
PUBLISHED_ARCHITECTURE = VQGANConfig(n_embed=16384)

_conv3 = partial(nn.Conv, kernel_size=(3, 3), padding=((1, 1), (1, 1)))
_conv1 = partial(nn.Conv, kernel_size=(1, 1), padding="VALID")
_group_norm = partial(nn.GroupNorm, num_groups=32, epsilon=1e-6)


class ResnetBlock(nn.Module):
    out_channels: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        h = _conv3(self.out_channels, dtype=self.dtype, name="conv1")(nn.swish(_group_norm(name="norm1")(x)))
        h = _conv3(self.out_channels, dtype=self.dtype, name="conv2")(nn.swish(_group_norm(name="norm2")(h)))
        if x.shape[-1] != self.out_channels:
            x = _conv1(self.out_channels, dtype=self.dtype, name="nin_shortcut")(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of the feature map."""

    dtype: Any

    @nn.compact
    def __call__(self, x):
        batch, height, width, channels = x.shape
        h = _group_norm(name="norm")(x)
        flat = lambda t: t.reshape(batch, height * width, channels)
        query, key, value = (flat(_conv1(channels, dtype=self.dtype, name=n)(h)) for n in ("q", "k", "v"))
        scores = jnp.einsum("bqc,bkc->bqk", query, key) * (channels**-0.5)
        weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)
        h = jnp.einsum("bqk,bkc->bqc", weights, value).reshape(x.shape)
        return x + _conv1(channels, dtype=self.dtype, name="proj_out")(h)


def _level_blocks(config: VQGANConfig, level: int, count: int, dtype: Any, x):
    """`count` resnet blocks at one resolution level, each followed by attention where that
    resolution has it (called inside a parent's compact method, whose parameters they become)."""
    channels = config.ch * config.ch_mult[level]
    resolution = config.resolution // 2**level
    for i in range(count):
        x = ResnetBlock(channels, dtype, name=f"block_{i}")(x)
        if resolution in config.attn_resolutions:
            x = AttnBlock(dtype, name=f"attn_{i}")(x)
    return x


class UpBlock(nn.Module):
    """One resolution level: resnet (+ attention) blocks, then 2× nearest upsampling."""

    config: VQGANConfig
    level: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        x = _level_blocks(self.config, self.level, self.config.num_res_blocks + 1, self.dtype, x)
        if self.level != 0:
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
            if self.config.resamp_with_conv:
                x = Upsample(self.dtype, name="upsample")(x)
        return x


class Upsample(nn.Module):
    """The 3×3 convolution after nearest-neighbour upsampling."""

    dtype: Any

    @nn.compact
    def __call__(self, x):
        return _conv3(x.shape[-1], dtype=self.dtype, name="conv")(x)


class Decoder(nn.Module):
    config: VQGANConfig
    dtype: Any

    @nn.compact
    def __call__(self, z):
        config = self.config
        channels = config.ch * config.ch_mult[-1]
        x = _conv3(channels, dtype=self.dtype, name="conv_in")(z)
        x = MidBlock(channels, self.dtype, name="mid")(x)
        for level in reversed(range(len(config.ch_mult))):
            x = UpBlock(config, level, self.dtype, name=f"up_{level}")(x)
        x = nn.swish(_group_norm(name="norm_out")(x))
        return _conv3(config.out_ch, dtype=self.dtype, name="conv_out")(x)


class MidBlock(nn.Module):
    channels: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        x = ResnetBlock(self.channels, self.dtype, name="block_1")(x)
        x = AttnBlock(self.dtype, name="attn_1")(x)
        return ResnetBlock(self.channels, self.dtype, name="block_2")(x)


class VQGANDecoder(nn.Module):
    """Image tokens (batch, grid²) → pixels (batch, resolution, resolution, 3), about [0, 1].

    Token grids of any size, (batch, rows, columns), decode to (batch, 16·rows, 16·columns, 3): the
    decoder is convolutional (and its attention spans whatever grid it gets), which is what seamless
    grids and extended pictures use."""

    config: VQGANConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, codes):
        config = self.config
        codebook = nn.Embed(config.n_embed, config.embed_dim, dtype=self.dtype, name="embedding")
        if codes.ndim == 2:
            codes = codes.reshape(codes.shape[0], config.grid_size, config.grid_size)
        z = codebook(codes)
        z = _conv1(config.z_channels, dtype=self.dtype, name="post_quant_conv")(z)
        return Decoder(config, self.dtype, name="decoder")(z).astype(jnp.float32)


# ---- the encoder: pixels → latent → nearest codebook entries


class Downsample(nn.Module):
    """A stride-2 3×3 convolution that halves the resolution. As in taming-transformers, the zero
    padding is one row and one column at the bottom and right only: the weights were trained with
    windows that start on the top-left pixel, which symmetric padding would shift by one."""

    dtype: Any

    @nn.compact
    def __call__(self, x):
        return nn.Conv(x.shape[-1], kernel_size=(3, 3), strides=(2, 2), padding=((0, 1), (0, 1)),
                       dtype=self.dtype, name="conv")(x)


class DownBlock(nn.Module):
    """One resolution level: resnet (+ attention) blocks, then halving, except at the last level."""

    config: VQGANConfig
    level: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        config = self.config
        x = _level_blocks(config, self.level, config.num_res_blocks, self.dtype, x)
        if self.level != len(config.ch_mult) - 1:
            if config.resamp_with_conv:
                x = Downsample(self.dtype, name="downsample")(x)
            else:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return x


class Encoder(nn.Module):
    config: VQGANConfig
    dtype: Any

    @nn.compact
    def __call__(self, pixels):
        config = self.config
        x = _conv3(config.ch, dtype=self.dtype, name="conv_in")(pixels)
        for level in range(len(config.ch_mult)):
            x = DownBlock(config, level, self.dtype, name=f"down_{level}")(x)
        x = MidBlock(config.ch * config.ch_mult[-1], self.dtype, name="mid")(x)
        x = nn.swish(_group_norm(name="norm_out")(x))
        return _conv3(config.z_channels, dtype=self.dtype, name="conv_out")(x)


def nearest_codes(latent: jax.Array, codebook: jax.Array) -> jax.Array:
    """(batch, grid, grid, embed_dim) latent → (batch, grid²) indices of the nearest codebook rows.

    The squared distance is computed as the reference does, ‖z‖² + ‖e‖² − 2 z·e, in float32 with
    full-precision products (not TF32 on GPUs): the same float order keeps near-ties falling the
    same way as far as possible.
    """
    z = latent.reshape(-1, latent.shape[-1]).astype(jnp.float32)
    e = codebook.astype(jnp.float32)
    distances = (jnp.sum(z**2, axis=1, keepdims=True) + jnp.sum(e**2, axis=1)
                 - 2 * jnp.dot(z, e.T, precision=jax.lax.Precision.HIGHEST))
    return jnp.argmin(distances, axis=1).astype(jnp.int32).reshape(latent.shape[0], -1)


class VQGANEncoder(nn.Module):
    """Pixels (batch, resolution, resolution, 3) in [0, 1] → (latent, codes): the `quant_conv`
    output (batch, grid, grid, embed_dim) in float32, and the nearest codebook entries (batch, grid²).

    A module of its own, so that generation, which only decodes, never loads these weights."""

    config: VQGANConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pixels):
        config = self.config
        z = Encoder(config, self.dtype, name="encoder")(pixels)
        latent = _conv1(config.embed_dim, dtype=self.dtype, name="quant_conv")(z).astype(jnp.float32)
        codebook = nn.Embed(config.n_embed, config.embed_dim, dtype=self.dtype, name="embedding")
        return latent, nearest_codes(latent, codebook.embedding)


def param_shapes(model: VQGANDecoder | VQGANEncoder) -> dict:
    config = model.config
    if isinstance(model, VQGANEncoder):
        inputs = jnp.zeros((1, config.resolution, config.resolution, 3), jnp.float32)
    else:
        inputs = jnp.zeros((1, config.grid_size**2), jnp.int32)
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), inputs)["params"])


@lru_cache(maxsize=8)
def compiled_decoder(model: VQGANDecoder):
    """The jitted decoder, unchecked: for codes already known to be in the codebook
    (e.g. sampled with `codebook_size`), possibly sharded over devices."""
    return jax.jit(lambda params, codes: model.apply({"params": params}, codes))


def decode(model: VQGANDecoder, params: dict, codes) -> jax.Array:
    """(batch, grid²) codes → (batch, H, W, 3) float32 pixels, unclipped.

    Raises ValueError for codes outside the codebook (the embedding lookup would
    silently clamp them).
    """
    codes = np.asarray(codes)
    expected = model.config.grid_size**2
    if codes.ndim != 2 or codes.shape[1] != expected:
        raise ValueError(f"Expected codes of shape (batch, {expected}), got {codes.shape}.")
    if codes.size and (codes.min() < 0 or codes.max() >= model.config.n_embed):
        bad = codes[(codes < 0) | (codes >= model.config.n_embed)]
        raise ValueError(f"Codes must be in [0, {model.config.n_embed}); got {bad[:5].tolist()}. "
                         "Sample with codebook_size equal to the VQGAN's n_embed.")
    return compiled_decoder(model)(params, jnp.asarray(codes, jnp.int32))


def decode_grid(model: VQGANDecoder, params: dict, tokens) -> jax.Array:
    """One (rows, columns) grid of codes of any size → (16·rows, 16·columns, 3) float32 pixels, unclipped:
    the grid decoded as one picture. Each new grid shape compiles once."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or 0 in tokens.shape or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"Expected one (rows, columns) grid of codes, got {tokens.dtype} {tokens.shape}.")
    if tokens.min() < 0 or tokens.max() >= model.config.n_embed:
        raise ValueError(f"Codes must be in [0, {model.config.n_embed}); these come from another VQGAN.")
    return compiled_decoder(model)(params, jnp.asarray(tokens, jnp.int32)[None])[0]


def to_uint8(pixels) -> np.ndarray:
    """Float pixels → uint8 RGB: clipped to [0, 1], scaled and truncated as the official notebook did."""
    return (np.clip(np.asarray(pixels, np.float32), 0.0, 1.0) * 255).astype(np.uint8)


@lru_cache(maxsize=8)
def compiled_encoder(model: VQGANEncoder):
    """The jitted encoder, unchecked: (params, float32 pixels) → (latent, codes), as `VQGANEncoder`."""
    return jax.jit(lambda params, pixels: model.apply({"params": params}, pixels))


def encode(model: VQGANEncoder, params: dict, pixels) -> np.ndarray:
    """(batch, H, W, 3) float pixels in [0, 1], H = W = the model's resolution → (batch, grid²)
    int32 codes, the nearest codebook entries (what `decode` takes back).

    [0, 1] is the range dalle-mini fed its training images to this encoder in, and the decoder's
    output once clipped. Make such arrays from files, PIL images or uint8 arrays with
    `image_to_pixels`. The distances to the codebook take batch × grid² × n_embed floats
    (16 MiB per image for the published model): encode large sets in batches.
    """
    pixels = np.asarray(pixels)
    side = model.config.resolution
    if not np.issubdtype(pixels.dtype, np.floating):
        raise ValueError(f"encode takes float pixels in [0, 1], got a {pixels.dtype} array: convert images "
                         "with image_to_pixels (uint8 0–255 becomes 0–1).")
    if pixels.ndim == 3:
        raise ValueError(f"encode takes a batch (batch, {side}, {side}, 3), got one image {pixels.shape}: "
                         "pass pixels[None] or np.stack([...]).")
    if pixels.ndim != 4 or pixels.shape[1:] != (side, side, 3):
        raise ValueError(f"encode takes pixels of shape (batch, {side}, {side}, 3), got {pixels.shape}: "
                         f"crop and resize each image with image_to_pixels(image, {side}).")
    if not np.isfinite(pixels).all():
        raise ValueError("encode takes pixels in [0, 1], got NaN or infinite values.")
    if pixels.size and (pixels.min() < 0 or pixels.max() > 1):
        raise ValueError(f"encode takes pixels in [0, 1], got values from {pixels.min()} to {pixels.max()}: "
                         "clip the decoder's output with np.clip(pixels, 0, 1), or convert 0–255 images "
                         "with image_to_pixels.")
    _, codes = compiled_encoder(model)(params, jnp.asarray(pixels, jnp.float32))
    return np.asarray(codes, np.int32)


# ---- images → pixels for the encoder


def _as_array(image) -> np.ndarray:
    """A path, PIL image or array → (H, W, channels) array, still in its own dtype and range."""
    if isinstance(image, (str, Path)):     # through the guarded reader: size and kind checked first
        from nbkit.imagefile import read_image
        from nbkit.limits import MAX_SOURCE_PIXELS

        return _as_array(read_image(image, max_pixels=MAX_SOURCE_PIXELS))
    if isinstance(image, Image.Image):
        # Phones store photos sideways with an EXIF orientation tag: show them upright, as viewers do.
        image = ImageOps.exif_transpose(image)
        has_alpha = "A" in image.getbands() or "transparency" in image.info
        return np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    if not isinstance(image, np.ndarray) and not hasattr(image, "__array__"):
        raise TypeError(f"Expected a path, a PIL image or an array, got a {type(image).__name__}.")
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape:
        raise ValueError(f"An image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
                         f"got shape {array.shape}.")
    return array


def _to_unit_range(array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError("Float image arrays must be in [0, 1], got NaN or infinite values.")
        if array.min() < 0 or array.max() > 1:
            raise ValueError(f"Float image arrays must be in [0, 1], got {array.min()} to {array.max()}: "
                             "divide 0–255 values by 255, or pass a uint8 array.")
        return array
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"Image arrays must be uint8 (0–255) or float (0–1), got {array.dtype}.")
    if array.min() < 0 or array.max() > 255:
        raise ValueError(f"Integer image arrays must be in 0–255, got {array.min()} to {array.max()}: "
                         "scale them to uint8 first.")
    return array.astype(np.float32) / np.float32(255)


def image_to_pixels(image, resolution: int) -> np.ndarray:
    """An image → (resolution, resolution, 3) float32 RGB in [0, 1], what `encode` takes (stack them).

    `image`: a path, a PIL image, or an array, uint8 (0–255) or float (0–1), of shape (H, W),
    (H, W, 1), (H, W, 3) or (H, W, 4). Grayscale is repeated to RGB; transparency is composited
    over white (what a viewer shows, whereas dropping alpha would expose whatever colours the
    transparent pixels happen to store). The largest centered square is cropped out, so nothing is
    stretched, then resized only if its side is not `resolution`: an image that already fits
    (e.g. a 256×256 PNG that nbkit saved) comes back exactly as its values / 255.

    The resize uses PIL's Lanczos filter on each channel in float32. When shrinking, PIL widens
    the filter by the reduction factor, so every source pixel is averaged in and fine detail does
    not alias into moiré that the encoder would read as texture; Lanczos is also PIL's sharpest
    filter when enlarging. Working in float avoids rounding to 8 bits in between; the slight
    overshoot Lanczos makes at hard edges is clipped back to [0, 1].
    """
    if not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(f"resolution must be a positive int (the model's, e.g. 256), got {resolution!r}.")
    pixels = _to_unit_range(_as_array(image))
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    elif pixels.shape[2] == 4:
        alpha = pixels[..., 3:]
        pixels = pixels[..., :3] * alpha + (1 - alpha)
    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    pixels = pixels[top:top + side, left:left + side]
    if side != resolution:
        channels = [Image.fromarray(np.ascontiguousarray(pixels[..., c]))
                    .resize((resolution, resolution), Image.Resampling.LANCZOS) for c in range(3)]
        pixels = np.clip(np.stack([np.asarray(c) for c in channels], axis=-1), 0, 1)
    return np.ascontiguousarray(pixels, np.float32)
