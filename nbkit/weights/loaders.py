"""Published checkpoints → our models' parameter trees: how each checkpoint's tensor names map
to the architectures in `nbkit.models`, and where benchmark weights come from when there is none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from nbkit.models.clip import CLIP, CLIPConfig
from nbkit.models.clip import param_shapes as clip_shapes
from nbkit.models.dallebart import DalleBart, DalleBartConfig
from nbkit.models.dallebart import param_shapes as dallebart_shapes
from nbkit.models.vqgan import VQGANConfig, VQGANDecoder, VQGANEncoder
from nbkit.models.vqgan import param_shapes as vqgan_shapes
from nbkit.weights.checkpoint import CheckpointError, Place, load_params, random_weights

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
                   place: Place | None = None, weight_storage: str = "float32") -> tuple[DalleBart, dict]:
    """The model and its weights from a model folder (config.json + flax_model.msgpack),
    whatever layout and precision the file was saved in; computes in `dtype`. `place` puts
    each tensor on its device(s) as it is read (see `load_params`). `weight_storage` (bfloat16, int8:
    `nbkit.weights.stored`, float32 arithmetic only) stores each Dense kernel narrower as it is read,
    so that no float32 copy of the whole model is ever held."""
    from nbkit.weights.stored import KERNEL_SCALE, choose_storage, stored_kernel

    storage = choose_storage(weight_storage, dtype) if weight_storage != "float32" else "float32"
    model = DalleBart(DalleBartConfig.from_folder(folder), dtype)
    put = place or (lambda key, value: jnp.asarray(value))
    scales = {}

    def place_stored(key, value):
        if storage == "float32" or key[-1] != "kernel" or value.ndim != 2:
            return put(key, value)
        kernel, scale = stored_kernel(value, storage)
        if scale is not None:
            scale_key = key[:-1] + (KERNEL_SCALE,)
            scales[scale_key] = put(scale_key, scale)
        return put(key, kernel)

    params = load_params(Path(folder) / WEIGHTS_FILE, dallebart_shapes(model), dtype, _dallebart_key,
                         FUSED_FROM, place_stored)
    for key, scale in scales.items():
        tree = params
        for name in key[:-1]:
            tree = tree[name]
        tree[key[-1]] = scale
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


# ---- Real-ESRGAN upscalers


def esrgan_key(torch_name: str) -> tuple[str, ...]:
    """`body.3.rdb1.conv2.weight` → ("body_3", "rdb1", "conv2", "weight"): the Flax modules are named
    after torch's, a list index joined to its list's name."""
    parts: list[str] = []
    for part in torch_name.split("."):
        if part.isdigit() and parts:
            parts[-1] = f"{parts[-1]}_{part}"
        else:
            parts.append(part)
    return tuple(parts)


def esrgan_params(state: dict, model, dtype: Any = jnp.float32, place: Place | None = None,
                  name: str = "the file") -> dict:
    """A PyTorch state dict → the model's parameter tree: conv weights (out, in, kh, kw) transposed
    once to Flax's (kh, kw, in, out), every name and shape checked against the model."""
    from flax.traverse_util import flatten_dict, unflatten_dict

    from nbkit.models.esrgan import param_shapes

    expected = flatten_dict(param_shapes(model))
    put = place or (lambda key, value: jnp.asarray(value))
    placed, unexpected, wrong = {}, [], []
    for torch_name, value in state.items():
        key = esrgan_key(torch_name)
        if key[-1] == "weight" and value.ndim == 4:
            key, value = key[:-1] + ("kernel",), value.transpose(2, 3, 1, 0)
        if key not in expected:
            unexpected.append(torch_name)
        elif tuple(value.shape) != tuple(expected[key].shape):
            wrong.append(f"{torch_name} has shape {tuple(value.shape)}, the model needs "
                         f"{tuple(expected[key].shape)}")
        else:
            kept = jnp.float32 if key[-1] == "weight" else dtype   # PReLU slopes stay float32
            placed[key] = put(key, np.ascontiguousarray(value).astype(jnp.dtype(kept)))
    missing = ["/".join(key) for key in expected if key not in placed]
    if missing or unexpected or wrong:
        problems = ([f"missing: {', '.join(missing[:4])}"] if missing else []) + (
            [f"not in the model: {', '.join(unexpected[:4])}"] if unexpected else []) + wrong[:4]
        raise CheckpointError(f"{name} does not fit the architecture read from it ({'; '.join(problems)}).")
    return unflatten_dict(placed)


def load_esrgan(path: str | Path, dtype: Any = jnp.float32, place: Place | None = None):
    """(model, params) from a Real-ESRGAN `.pth` or `.safetensors` file: the architecture and its
    hyperparameters are read from the tensors' names and shapes; the file is never trusted to run
    code (see `nbkit.weights.torch_files`)."""
    from nbkit.models.esrgan import build, config_from_shapes
    from nbkit.weights.torch_files import read_state_dict

    state = read_state_dict(path)
    config = config_from_shapes({key: value.shape for key, value in state.items()}, str(path))
    model = build(config, dtype)
    return model, esrgan_params(state, model, dtype, place, str(path))


# ---- benchmark weights


def random_params(model: DalleBart | VQGANDecoder | VQGANEncoder | CLIP, seed: int = 0) -> dict:
    """Random weights of the model's real sizes, for benchmarks (norm scales 1, biases 0)."""
    shapes = {DalleBart: dallebart_shapes, VQGANDecoder: vqgan_shapes, VQGANEncoder: vqgan_shapes,
              CLIP: clip_shapes}[type(model)](model)
    return random_weights(shapes, model.dtype, seed)
