"""One mesh over every device (of every host): rows of a batch split over its `data` axis and,
for models too big for one device, weight matrices split over its `model` axis.

Arrays are made with `jax.make_array_from_callback`, which works the same with one process
or several (a pod slice after `jax.distributed.initialize()`): each process passes the same
host values and places only its own devices' parts.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA, MODEL = "data", "model"


def make_mesh(model_parallel: int = 1, devices: list | None = None) -> Mesh:
    """`devices` (default: all) as a (data, model) grid; `model_parallel` devices share each model copy."""
    devices = list(devices or jax.devices())
    if model_parallel < 1 or len(devices) % model_parallel:
        raise ValueError(f"model_parallel={model_parallel} must divide the number of devices "
                         f"({len(devices)}).")
    return Mesh(np.array(devices).reshape(len(devices) // model_parallel, model_parallel), (DATA, MODEL))


def data_size(mesh: Mesh) -> int:
    return mesh.shape[DATA]


def rows(mesh: Mesh) -> NamedSharding:
    """Split the first axis (batch rows) over the data axis; copies along the model axis."""
    return NamedSharding(mesh, PartitionSpec(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def weight_sharding(mesh: Mesh, shape: tuple[int, ...]) -> NamedSharding:
    """Matrices are split along their first axis (the output features of nbkit's Dense kernels,
    the vocabulary of embeddings) when it divides evenly: each output is then computed whole on
    one device, so splitting the model changes no number. Everything else is copied."""
    parts = mesh.shape[MODEL]
    if parts > 1 and len(shape) >= 2 and shape[0] % parts == 0:
        return NamedSharding(mesh, PartitionSpec(MODEL))
    return replicated(mesh)


def put(value: Any, sharding: NamedSharding) -> jax.Array:
    """A host array as a global array laid out by `sharding` (same call on every host)."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def put_tree(tree: Any, mesh: Mesh) -> Any:
    """Copies every leaf of a (small) parameter tree onto every device of the mesh."""
    return jax.tree.map(lambda leaf: put(leaf, replicated(mesh)), tree)


def weight_placer(mesh: Mesh):
    """For `load_params(place=...)`: each tensor goes straight to its devices as it is read."""
    return lambda key, value: put(value, weight_sharding(mesh, value.shape))


def to_host(array: jax.Array) -> np.ndarray:
    """The whole array on this host, even when parts of it live on other hosts."""
    if array.is_fully_addressable:
        return np.asarray(array)
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))
