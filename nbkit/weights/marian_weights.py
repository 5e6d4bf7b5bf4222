"""A Marian (opus-mt) checkpoint folder's weights → the Flax `Marian` parameter tree.

The hub repos publish `pytorch_model.bin` (read by nbkit's restricted unpickler: no pickle code
runs) and sometimes `model.safetensors`; either holds PyTorch names and (out, in) kernels, which
`nbkit.models.marian.Dense` keeps as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from nbkit.models.marian import Marian, MarianConfig, marian_key, param_shapes
from nbkit.weights.checkpoint import CheckpointError
from nbkit.weights.torch_files import read_state_dict

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def marian_weights_file(folder: str | Path) -> Path:
    """The folder's weights: model.safetensors if present, else pytorch_model.bin."""
    for name in WEIGHT_FILES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise FileNotFoundError(f"{folder} holds neither {' nor '.join(WEIGHT_FILES)}: download the translator "
                            "again (nbkit download translate-...).")


def marian_params(state: dict[str, np.ndarray], model: Marian, dtype: Any = jnp.float32,
                  name: str = "the file") -> dict:
    """A PyTorch state dict → the parameter tree, every name and shape checked."""
    expected = flatten_dict(param_shapes(model))
    placed, wrong = {}, []
    for torch_name, value in state.items():
        key = marian_key(torch_name)
        if key is None or key not in expected or key in placed:
            continue   # position tables, lm_head and the shared table's aliases are recomputed or tied
        if key == ("final_logits_bias",):
            value = value.reshape(-1)
        if tuple(value.shape) != tuple(expected[key].shape):
            wrong.append(f"{torch_name} has shape {tuple(value.shape)}, config.json needs "
                         f"{tuple(expected[key].shape)}")
            continue
        placed[key] = jnp.asarray(np.ascontiguousarray(value).astype(jnp.dtype(dtype)))
    missing = ["/".join(key) for key in expected if key not in placed]
    if missing or wrong:
        problems = ([f"missing: {', '.join(missing[:4])}"] if missing else []) + wrong[:4]
        raise CheckpointError(f"{name} does not match its config.json ({'; '.join(problems)}): download the "
                              "translator folder again.")
    return unflatten_dict(placed)


def load_marian(folder: str | Path, dtype: Any = jnp.float32,
                weights: str | Path | None = None) -> tuple[Marian, dict]:
    """(model, params) from an opus-mt folder (config.json + weights)."""
    config = MarianConfig.from_folder(folder)
    model = Marian(config, dtype)
    path = Path(weights) if weights is not None else marian_weights_file(folder)
    return model, marian_params(read_state_dict(path), model, dtype, str(path))
