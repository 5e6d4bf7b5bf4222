"""VQGAN decoder: a 16×16 grid of image tokens → a 256×256 RGB image, in Flax.

Generation only needs the codebook, `post_quant_conv` and the decoder (taming-
transformers' architecture, as published in `dalle-mini/vqgan_imagenet_f16_16384`); the
encoder weights in the checkpoint are never loaded. Module names follow that checkpoint.
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
    def from_folder(cls, folder: str | Path) -> "VQGANConfig":
        return config_from_dict(cls, read_json(Path(folder) / CONFIG_FILE, "a VQGAN model folder needs its config.json"))

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


class UpBlock(nn.Module):
    """One resolution level: resnet (+ attention) blocks, then 2× nearest upsampling."""

    config: VQGANConfig
    level: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        config = self.config
        channels = config.ch * config.ch_mult[self.level]
        resolution = config.resolution // 2**self.level
        for i in range(config.num_res_blocks + 1):
            x = ResnetBlock(channels, self.dtype, name=f"block_{i}")(x)
            if resolution in config.attn_resolutions:
                x = AttnBlock(self.dtype, name=f"attn_{i}")(x)
        if self.level != 0:
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
            if config.resamp_with_conv:
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
    """Image tokens (batch, grid²) → pixels (batch, resolution, resolution, 3), about [0, 1]."""

    config: VQGANConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, codes):
        config = self.config
        codebook = nn.Embed(config.n_embed, config.embed_dim, dtype=self.dtype, name="embedding")
        side = config.grid_size
        z = codebook(codes).reshape(codes.shape[0], side, side, config.embed_dim)
        z = _conv1(config.z_channels, dtype=self.dtype, name="post_quant_conv")(z)
        return Decoder(config, self.dtype, name="decoder")(z).astype(jnp.float32)


def param_shapes(model: VQGANDecoder) -> dict:
    codes = jnp.zeros((1, model.config.grid_size**2), jnp.int32)
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), codes)["params"])


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


def to_uint8(pixels) -> np.ndarray:
    """Float pixels → uint8 RGB: clipped to [0, 1], scaled and truncated as the official notebook did."""
    return (np.clip(np.asarray(pixels, np.float32), 0.0, 1.0) * 255).astype(np.uint8)
