"""Published checkpoints → our models' parameter trees: how each checkpoint's tensor names map
to the architectures in `nbkit.models`, and where benchmark weights come from when there is none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp

from nbkit.models.clip import CLIP, CLIPConfig
from nbkit.models.clip import param_shapes as clip_shapes
from nbkit.models.dallebart import DalleBart, DalleBartConfig
from nbkit.models.dallebart import param_shapes as dallebart_shapes
from nbkit.models.vqgan import VQGANConfig, VQGANDecoder, VQGANEncoder
from nbkit.models.vqgan import param_shapes as vqgan_shapes
from nbkit.weights.checkpoint import Place, load_params, random_weights

WEIGHTS_FILE = "flax_model.msgpack"


# ---- DalleBart


# Fused products (see the module docstring) and the checkpoint tensors they are made of.
FUSED_FROM = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "kv_proj": ("k_proj", "v_proj"),
              "Dense_0_1": ("Dense_0", "Dense_1")}


def _dallebart_key(key: tuple[str, ...], value):
    """Published files wrap encoder and decoder in "model" and store kernels (in, out)."""
    key = key[1:] if key and key[0] == "model" else key
    return key, (value.T if key[-1] == "kernel" else value)


def load_dallebart(folder: str | Path, dtype: Any = jnp.float32,
                   place: Place | None = None) -> tuple[DalleBart, dict]:
    """The model and its weights from a model folder (config.json + flax_model.msgpack),
    whatever layout and precision the file was saved in; computes in `dtype`. `place` puts
    each tensor on its device(s) as it is read (see `load_params`)."""
    model = DalleBart(DalleBartConfig.from_folder(folder), dtype)
    params = load_params(Path(folder) / WEIGHTS_FILE, dallebart_shapes(model), dtype, _dallebart_key,
                         FUSED_FROM, place)
    return model, params


# ---- VQGAN


def _vqgan_key(key: tuple[str, ...], value):
    # The codebook sits under "quantize" in vqgan-jax files.
    if key[:2] == ("quantize", "embedding"):
        key = key[1:]
    return key, value


def load_vqgan(folder: str | Path, dtype: Any = jnp.float32) -> tuple[VQGANDecoder, dict]:
    """The decoder and its weights (codebook, post_quant_conv, decoder; not the encoder)."""
    model = VQGANDecoder(VQGANConfig.from_folder(folder), dtype)
    params = load_params(Path(folder) / WEIGHTS_FILE, vqgan_shapes(model), dtype, _vqgan_key)
    return model, params


def load_vqgan_encoder(folder: str | Path, dtype: Any = jnp.float32) -> tuple[VQGANEncoder, dict]:
    """The encoder and its weights (encoder, quant_conv, codebook; not the decoder), from the
    same model folder: only for encoding images, so generation never holds these."""
    model = VQGANEncoder(VQGANConfig.from_folder(folder), dtype)
    params = load_params(Path(folder) / WEIGHTS_FILE, vqgan_shapes(model), dtype, _vqgan_key)
    return model, params


# ---- CLIP


def _clip_key(key: tuple[str, ...], value):
    # transformers nests layers as encoder/layers/<i>; we name them layers_<i>.
    if "layers" in key:
        at = key.index("layers")
        if at + 1 < len(key) and key[at + 1].isdigit():
            key = key[:at] + (f"layers_{key[at + 1]}",) + key[at + 2:]
    return key, value



def load_clip(folder: str | Path, dtype: Any = jnp.float32) -> tuple[CLIP, dict]:
    model = CLIP(CLIPConfig.from_folder(folder), dtype)
    return model, load_params(Path(folder) / WEIGHTS_FILE, clip_shapes(model), dtype, _clip_key)


# ---- benchmark weights


def random_params(model: DalleBart | VQGANDecoder | VQGANEncoder | CLIP, seed: int = 0) -> dict:
    """Random weights of the model's real sizes, for benchmarks (norm scales 1, biases 0)."""
    shapes = {DalleBart: dallebart_shapes, VQGANDecoder: vqgan_shapes, VQGANEncoder: vqgan_shapes,
              CLIP: clip_shapes}[type(model)](model)
    return random_weights(shapes, model.dtype, seed)
