"""Reading Flax `flax_model.msgpack` checkpoints into the parameter trees our models expect.

Published checkpoints come in two layouts (layers stacked on a leading axis, or one
sub-tree per layer) and in fp16 or fp32. `load_params` brings any of them to the
stacked layout and the requested dtype, and checks every shape against the model, so
that a wrong or damaged file fails here with its name rather than deep inside jax.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from flax.traverse_util import flatten_dict, unflatten_dict

Path_ = tuple[str, ...]
FlatParams = dict[Path_, np.ndarray]

_STACKED = re.compile(r"^(?P<name>\w+Layer)s$")  # FlaxBartEncoderLayers
_ONE_LAYER = re.compile(r"^(?P<name>\w+Layer)_(?P<index>\d+)$")  # FlaxBartEncoderLayer_3


class CheckpointError(ValueError):
    """A model file is missing, damaged, or does not fit the model's config."""


def read_msgpack(path: str | Path) -> FlatParams:
    """The file's tensors as numpy arrays, keyed by their path in the tree."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing. Download the model again, or point nbkit at a folder that "
            f"contains '{path.name}'."
        )
    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except Exception as error:  # msgpack raises many kinds for a truncated or foreign file
        raise CheckpointError(
            f"{path} is damaged or not a Flax msgpack checkpoint ({type(error).__name__}: {error}). "
            "Delete it and download the model again."
        ) from None
    if not isinstance(tree, Mapping):
        raise CheckpointError(f"{path} does not hold a parameter tree; download the model again.")
    return {key: np.asarray(value) for key, value in flatten_dict(tree).items()}


def stack_layers(flat: FlatParams) -> FlatParams:
    """One-sub-tree-per-layer → stacked, and drops the stacked layout's wrapper name.

    In the per-layer layout a layer may lack a norm scale that the others have (the
    reference skipped it on the last layer); scale 1 is what that layer computed.
    """
    out: FlatParams = {}
    per_layer: dict[tuple[Path_, Path_], dict[int, np.ndarray]] = {}
    for key, value in flat.items():
        for position, part in enumerate(key):
            if _STACKED.match(part):
                out[key[:position] + key[position + 1 :]] = value
                break
            match = _ONE_LAYER.match(part)
            if match:
                group = (key[:position], key[position + 1 :])
                per_layer.setdefault(group, {})[int(match["index"])] = value
                break
        else:
            out[key] = value

    layer_counts: dict[Path_, int] = {}
    for (prefix, _), layers in per_layer.items():
        layer_counts[prefix] = max(layer_counts.get(prefix, 0), max(layers) + 1)
    for (prefix, leaf), layers in per_layer.items():
        count, example = layer_counts[prefix], next(iter(layers.values()))
        if leaf[-1] != "scale" and len(layers) != count:
            missing = sorted(set(range(count)) - set(layers))
            raise CheckpointError(f"layer(s) {missing} of {'/'.join(prefix)} have no {'/'.join(leaf)}.")
        out[prefix + leaf] = np.stack([layers.get(i, np.ones_like(example)) for i in range(count)])
    return out


def fit_to_model(flat: FlatParams, expected: Mapping[Path_, jax.ShapeDtypeStruct], source: str) -> FlatParams:
    """Checks names and shapes against the model; a norm without scale gets scale 1.

    Tensors the model does not use (e.g. a VQGAN's encoder) are left out.
    """
    fitted, missing, wrong = {}, [], []
    for key, spec in expected.items():
        value = flat.get(key)
        if value is None and key[-1] == "scale":
            value = np.ones(spec.shape, np.float32)
        if value is None:
            missing.append("/".join(key))
        elif tuple(value.shape) != tuple(spec.shape):
            wrong.append(f"{'/'.join(key)} has shape {tuple(value.shape)}, the config needs {tuple(spec.shape)}")
        else:
            fitted[key] = value
    if missing or wrong:
        problems = [f"missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"] if missing else []
        problems += wrong[:5]
        raise CheckpointError(
            f"{source} does not match its config.json ({'; '.join(problems)}). The weights and "
            "the config must come from the same model: download the model folder again."
        )
    return fitted


def load_params(path: str | Path, expected: Mapping[str, Any], dtype: Any,
                rename: Callable[[Path_], Path_] = lambda key: key) -> dict:
    """Reads a checkpoint into the tree `expected` describes (a tree of shapes, as from
    `jax.eval_shape(model.init, ...)["params"]`), cast to `dtype`."""
    flat = {rename(key): value for key, value in stack_layers(read_msgpack(path)).items()}
    fitted = fit_to_model(flat, flatten_dict(expected), str(path))
    return unflatten_dict({key: jnp.asarray(value, dtype=dtype) for key, value in fitted.items()})
