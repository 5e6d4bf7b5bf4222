"""Real-ESRGAN's two published upscaler architectures as channels-last Flax modules.

- `RRDBNet` (ESRGAN's generator; the RealESRGAN_x4plus, x4plus_anime_6B and x2plus files): a stack
  of residual-in-residual dense blocks at the input's resolution, then two nearest-neighbour ×2
  upsamplings with a conv each. The ×2 and ×1 models pixel-unshuffle their input first (by 2 or 4),
  so that the body always runs at a quarter of the output's side.
- `SRVGGNetCompact` (realesr-general-x4v3): a plain chain of 3×3 convs with per-channel PReLU at
  the input's resolution, a pixel shuffle to the output size, plus the input upsampled by nearest
  neighbour (the network learns the residual).

The released files carry no config, so `config_from_shapes` reads the hyperparameters from the
tensors' names and shapes. Parameters are named after the PyTorch modules (`body_3/rdb1/conv2`
for `body.3.rdb1.conv2`), so `nbkit.weights.loaders.load_esrgan` maps names one to one.
Inputs and outputs are (batch, height, width, 3) floats in [0, 1] (the output is not clipped).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

LEAKY_SLOPE = 0.2      # the LeakyReLU slope of every ESRGAN conv
RESIDUAL_SCALE = 0.2   # dense-block and RRDB outputs are scaled before the skip connection


@dataclasses.dataclass(frozen=True)
class RRDBNetConfig:
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32
    scale: int = 4
    num_in_ch: int = 3
    num_out_ch: int = 3

    @property
    def unshuffle(self) -> int:
        """The ×2 model unshuffles by 2, the ×1 by 4: the body runs at output side / 4."""
        return 4 // self.scale


@dataclasses.dataclass(frozen=True)
class SRVGGConfig:
    num_feat: int = 64
    num_conv: int = 32
    scale: int = 4
    num_in_ch: int = 3
    num_out_ch: int = 3


UpscalerConfig = RRDBNetConfig | SRVGGConfig

# What the released files are, for the registry and the benchmark (real sizes).
PUBLISHED_ARCHITECTURES: dict[str, UpscalerConfig] = {
    "x4plus": RRDBNetConfig(64, 23, 32, 4),
    "x4plus-anime-6b": RRDBNetConfig(64, 6, 32, 4),
    "x2plus": RRDBNetConfig(64, 23, 32, 2),
    "general-x4v3": SRVGGConfig(64, 32, 4),
}


def _conv(features: int, name: str, dtype: Any) -> nn.Conv:
    return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), dtype=dtype, name=name)


def pixel_unshuffle(x: jax.Array, factor: int) -> jax.Array:
    """(b, h·f, w·f, c) → (b, h, w, c·f²), channels ordered as torch's pixel_unshuffle (c, row, col)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // factor, factor, w // factor, factor, c)
    return x.transpose(0, 1, 3, 5, 2, 4).reshape(b, h // factor, w // factor, c * factor * factor)


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
    """(b, h, w, c·f²) → (b, h·f, w·f, c), the inverse of `pixel_unshuffle` (torch's pixel_shuffle)."""
    b, h, w, channels = x.shape
    c = channels // (factor * factor)
    x = x.reshape(b, h, w, c, factor, factor)
    return x.transpose(0, 1, 4, 2, 5, 3).reshape(b, h * factor, w * factor, c)


def upsample_nearest(x: jax.Array, factor: int) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def _lrelu(x: jax.Array) -> jax.Array:
    return nn.leaky_relu(x, LEAKY_SLOPE)


class ResidualDenseBlock(nn.Module):
    num_feat: int
    num_grow_ch: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        features = [x]
        for i in range(1, 5):
            grown = _conv(self.num_grow_ch, f"conv{i}", self.dtype)(jnp.concatenate(features, axis=-1))
            features.append(_lrelu(grown))
        out = _conv(self.num_feat, "conv5", self.dtype)(jnp.concatenate(features, axis=-1))
        return out * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    num_feat: int
    num_grow_ch: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        out = x
        for i in range(1, 4):
            out = ResidualDenseBlock(self.num_feat, self.num_grow_ch, self.dtype, name=f"rdb{i}")(out)
        return out * RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    config: RRDBNetConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pixels):
        c = self.config
        x = pixels.astype(self.dtype)
        if c.unshuffle > 1:
            x = pixel_unshuffle(x, c.unshuffle)
        feat = _conv(c.num_feat, "conv_first", self.dtype)(x)
        body = feat
        for i in range(c.num_block):
            body = RRDB(c.num_feat, c.num_grow_ch, self.dtype, name=f"body_{i}")(body)
        feat = feat + _conv(c.num_feat, "conv_body", self.dtype)(body)
        feat = _lrelu(_conv(c.num_feat, "conv_up1", self.dtype)(upsample_nearest(feat, 2)))
        feat = _lrelu(_conv(c.num_feat, "conv_up2", self.dtype)(upsample_nearest(feat, 2)))
        feat = _lrelu(_conv(c.num_feat, "conv_hr", self.dtype)(feat))
        out = _conv(c.num_out_ch, "conv_last", self.dtype)(feat)
        return out.astype(jnp.float32)


class PReLU(nn.Module):
    """Per-channel PReLU, its slopes named `weight` like torch's."""
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        weight = self.param("weight", nn.initializers.constant(0.25), (x.shape[-1],), jnp.float32)
        return jnp.where(x >= 0, x, x * weight.astype(self.dtype))


class SRVGGNetCompact(nn.Module):
    config: SRVGGConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pixels):
        c = self.config
        x = pixels.astype(self.dtype)
        out = PReLU(self.dtype, name="body_1")(_conv(c.num_feat, "body_0", self.dtype)(x))
        for i in range(c.num_conv):
            out = _conv(c.num_feat, f"body_{2 * i + 2}", self.dtype)(out)
            out = PReLU(self.dtype, name=f"body_{2 * i + 3}")(out)
        out = _conv(c.num_out_ch * c.scale * c.scale, f"body_{2 * c.num_conv + 2}", self.dtype)(out)
        out = pixel_shuffle(out, c.scale) + upsample_nearest(x, c.scale)
        return out.astype(jnp.float32)


def build(config: UpscalerConfig, dtype: Any = jnp.float32) -> RRDBNet | SRVGGNetCompact:
    return RRDBNet(config, dtype) if isinstance(config, RRDBNetConfig) else SRVGGNetCompact(config, dtype)


def param_shapes(model: RRDBNet | SRVGGNetCompact) -> dict:
    """The parameter tree's shapes (nothing allocated)."""
    pixels = jax.ShapeDtypeStruct((1, 16, 16, model.config.num_in_ch), jnp.float32)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), pixels)["params"]


class UnknownArchitectureError(ValueError):
    """A state dict that is neither of Real-ESRGAN's published architectures."""


_BLOCK = re.compile(r"^body\.(\d+)\.")


def config_from_shapes(shapes: Mapping[str, tuple[int, ...]], name: str = "the file") -> UpscalerConfig:
    """The architecture and hyperparameters of a state dict, from its tensors' names and shapes
    (PyTorch layout: conv weights (out, in, kh, kw))."""
    def shape(key: str) -> tuple[int, ...]:
        return tuple(shapes[key])

    if all(key in shapes for key in ("conv_first.weight", "conv_last.weight", "body.0.rdb1.conv1.weight")):
        first, grow = shape("conv_first.weight"), shape("body.0.rdb1.conv1.weight")
        blocks = 1 + max(int(m.group(1)) for key in shapes if (m := _BLOCK.match(key)))
        scales = {3: 4, 12: 2, 48: 1}
        if first[1] not in scales:
            raise UnknownArchitectureError(
                f"{name} looks like an RRDBNet but its conv_first takes {first[1]} channels; nbkit reads the "
                "RGB models (3 channels: ×4, 12: ×2, 48: ×1).")
        return RRDBNetConfig(num_feat=first[0], num_block=blocks, num_grow_ch=grow[0], scale=scales[first[1]],
                             num_out_ch=shape("conv_last.weight")[0])
    indexes = sorted({int(m.group(1)) for key in shapes if (m := _BLOCK.match(key))})
    if indexes and "body.0.weight" in shapes and len(shape("body.0.weight")) == 4:
        last = indexes[-1]
        convs = [i for i in indexes if len(shapes.get(f"body.{i}.weight", ())) == 4]
        prelus = [i for i in indexes if len(shapes.get(f"body.{i}.weight", ())) == 1]
        if prelus != [i for i in range(1, last, 2)]:
            raise UnknownArchitectureError(
                f"{name} looks like an SRVGGNetCompact without PReLU activations (relu or leaky relu "
                "variants); nbkit reads the published PReLU models only.")
        features, out_channels = shape("body.0.weight")[0], shape(f"body.{last}.weight")[0]
        scale = round((out_channels / 3) ** 0.5)
        if convs != list(range(0, last + 1, 2)) or scale * scale * 3 != out_channels:
            raise UnknownArchitectureError(f"{name}: an SRVGGNetCompact-like body whose last conv has "
                                           f"{out_channels} outputs (not 3·scale²).")
        return SRVGGConfig(num_feat=features, num_conv=len(convs) - 2, scale=scale,
                           num_in_ch=shape("body.0.weight")[1])
    found = ", ".join(sorted(shapes)[:6]) + (" …" if len(shapes) > 6 else "")
    raise UnknownArchitectureError(
        f"{name} is neither of Real-ESRGAN's architectures (RRDBNet: conv_first, body.N.rdbK, conv_last; "
        f"SRVGGNetCompact: body.N convs and PReLUs). It holds {len(shapes)} tensor(s): {found or 'none'}.")
