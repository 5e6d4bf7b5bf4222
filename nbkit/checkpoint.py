"""Reading Flax `flax_model.msgpack` checkpoints into the parameter trees our models expect.

Published checkpoints come in two layouts (layers stacked on a leading axis, or one
sub-tree per layer) and in fp16 or fp32. `load_params` brings any of them to one
sub-tree per layer in the requested dtype, and checks every shape against the model, so
that a wrong or damaged file fails here with its name rather than deep inside jax.
"""

from __future__ import annotations

import dataclasses
import json
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


def read_json(path: str | Path, needed_for: str) -> dict:
    """A model folder's JSON file (config.json, ...), or an error naming it and what it is for."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {needed_for}. Download the model folder again.")
    try:
        return json.loads(path.read_text(encoding="utf8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); download the model folder again.") from None


def config_from_dict(cls, values: Mapping[str, Any]):
    """A config dataclass from a config.json's values; fields it does not know are ignored."""
    known = {field.name for field in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in values.items() if key in known})


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


def split_layers(flat: FlatParams) -> FlatParams:
    """Both published layouts → one sub-tree per layer, named `layers_0`, `layers_1`, ...

    Stacked: .../layers/FlaxBartEncoderLayers/<leaf> with a leading layer axis (sliced
    as views, nothing is copied). Per layer: .../layers/FlaxBartEncoderLayer_3/<leaf>.
    """
    out: FlatParams = {}
    for key, value in flat.items():
        for position, part in enumerate(key):
            container = key[position - 1] if position else None
            stacked, one = _STACKED.match(part), _ONE_LAYER.match(part)
            if container is not None and stacked:
                for index in range(value.shape[0]):
                    out[key[: position - 1] + (f"{container}_{index}",) + key[position + 1 :]] = value[index]
                break
            if container is not None and one:
                out[key[: position - 1] + (f"{container}_{one['index']}",) + key[position + 1 :]] = value
                break
        else:
            out[key] = value
    return out


def fit_to_model(flat: FlatParams, expected: Mapping[Path_, jax.ShapeDtypeStruct], source: str,
                 fused_from: Mapping[str, tuple[str, ...]] | None = None) -> FlatParams:
    """Checks names and shapes against the model; a norm without scale gets scale 1
    (the reference leaves it out of some layers, where it computed with scale 1).

    A module the model fuses (`fused_from`: fused name → stored names) is made by
    concatenating the stored tensors along their first (output) axis. Tensors the model
    does not use (e.g. a VQGAN's encoder) are left out.
    """
    fitted, missing, wrong = {}, [], []
    for key, spec in expected.items():
        value = flat.get(key)
        parts = (fused_from or {}).get(key[-2], ()) if len(key) > 1 else ()
        if value is None and parts and all(key[:-2] + (p, key[-1]) in flat for p in parts):
            value = np.concatenate([flat[key[:-2] + (p, key[-1])] for p in parts], axis=0)
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


Convert = Callable[[Path_, np.ndarray], tuple[Path_, np.ndarray]]


def load_params(path: str | Path, expected: Mapping[str, Any], dtype: Any,
                convert: Convert = lambda key, value: (key, value),
                fused_from: Mapping[str, tuple[str, ...]] | None = None) -> dict:
    """Reads a checkpoint into the tree `expected` describes (a tree of shapes, as from
    `jax.eval_shape(model.init, ...)["params"]`), cast to `dtype`.

    `convert` maps each stored (name, tensor) to the model's; see `fit_to_model` for `fused_from`.
    """
    flat = dict(convert(key, value) for key, value in split_layers(read_msgpack(path)).items())
    fitted = fit_to_model(flat, flatten_dict(expected), str(path), fused_from)
    return unflatten_dict({key: jnp.asarray(value, dtype=dtype) for key, value in fitted.items()})
