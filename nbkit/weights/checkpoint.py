"""Reading Flax `flax_model.msgpack` checkpoints into the parameter trees our models expect.

Published checkpoints come in two layouts (layers stacked on a leading axis, or one
sub-tree per layer) and in fp16 or fp32. `load_params` streams any of them, tensor by
tensor, into one sub-tree per layer in the requested dtype, and checks every shape
against the model, so that a wrong or damaged file fails here with its name rather than
deep inside jax, and host memory peaks near the size of the loaded model.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

Path_ = tuple[str, ...]
FlatParams = dict[Path_, np.ndarray]

_STACKED = re.compile(r"^(?P<name>\w+Layer)s$")  # FlaxBartEncoderLayers
_ONE_LAYER = re.compile(r"^(?P<name>\w+Layer)_(?P<index>\d+)$")  # FlaxBartEncoderLayer_3


class CheckpointError(ValueError):
    """A model file is missing, damaged, or does not fit the model's config."""


class _MsgpackReader:
    """Reads the subset of msgpack that Flax checkpoints use, straight from the file:
    nested maps with string keys, and arrays as ext objects (shape, dtype, bytes).
    Each array's bytes are read into their own buffer, so only one tensor at a time
    needs memory beyond what the caller keeps."""

    _EXT_NDARRAY, _EXT_SCALAR = 1, 3

    def __init__(self, file, name: str):
        self._file, self._name = file, name

    def _read(self, count: int) -> bytes:
        data = self._file.read(count)
        if len(data) != count:
            raise CheckpointError(f"{self._name} is damaged: it ends too early (an interrupted download?). "
                                  "Delete it and download again.")
        return data

    def _uint(self, size: int) -> int:
        return int.from_bytes(self._read(size), "big")

    def _header(self) -> tuple[str, Any]:
        byte = self._read(1)[0]
        if byte <= 0x7F or byte >= 0xE0:
            return "value", byte if byte <= 0x7F else byte - 256
        for low, high, kind in ((0x80, 0x8F, "map"), (0x90, 0x9F, "array"), (0xA0, 0xBF, "str")):
            if low <= byte <= high:
                return kind, byte - low
        sized = {0xC4: ("bin", 1), 0xC5: ("bin", 2), 0xC6: ("bin", 4), 0xD9: ("str", 1), 0xDA: ("str", 2),
                 0xDB: ("str", 4), 0xDC: ("array", 2), 0xDD: ("array", 4), 0xDE: ("map", 2), 0xDF: ("map", 4)}
        if byte in sized:
            kind, width = sized[byte]
            return kind, self._uint(width)
        if byte in (0xC7, 0xC8, 0xC9):
            size = self._uint({0xC7: 1, 0xC8: 2, 0xC9: 4}[byte])
            return "ext", (self._read(1)[0], size)
        if 0xD4 <= byte <= 0xD8:
            return "ext", (self._read(1)[0], 1 << (byte - 0xD4))
        fixed = {0xC0: None, 0xC2: False, 0xC3: True}
        if byte in fixed:
            return "value", fixed[byte]
        numbers = {0xCA: ">f4", 0xCB: ">f8", 0xCC: ">u1", 0xCD: ">u2", 0xCE: ">u4", 0xCF: ">u8",
                   0xD0: ">i1", 0xD1: ">i2", 0xD2: ">i4", 0xD3: ">i8"}
        if byte in numbers:
            dtype = np.dtype(numbers[byte])
            return "value", np.frombuffer(self._read(dtype.itemsize), dtype)[0].item()
        raise CheckpointError(f"{self._name} is damaged or not a Flax msgpack checkpoint "
                              f"(byte 0x{byte:02x}); delete it and download again.")

    def _small_value(self):
        """A key, shape or dtype name."""
        kind, info = self._header()
        if kind == "value":
            return info
        if kind == "str":
            return self._read(info).decode("utf8")
        if kind == "array":
            return tuple(self._small_value() for _ in range(info))
        raise CheckpointError(f"{self._name}: unexpected {kind} in a checkpoint; "
                              "delete it and download again.")

    def _array(self, code: int, size: int) -> np.ndarray:
        if code not in (self._EXT_NDARRAY, self._EXT_SCALAR):
            self._read(size)
            raise CheckpointError(f"{self._name} holds an object nbkit cannot read (msgpack ext {code}).")
        kind, count = self._header()
        if (kind, count) != ("array", 3):
            raise CheckpointError(f"{self._name}: an array entry is malformed; delete it and download again.")
        shape, dtype_name = self._small_value(), self._small_value()
        kind, size = self._header()
        if kind != "bin":
            raise CheckpointError(f"{self._name}: an array without data; delete it and download again.")
        buffer = np.empty(size, np.uint8)
        if self._file.readinto(memoryview(buffer)) != size:
            raise CheckpointError(f"{self._name} is damaged: it ends too early (an interrupted download?). "
                                  "Delete it and download again.")
        dtype = jnp.dtype(dtype_name)
        return buffer.view(dtype).reshape(shape)

    def tensors(self, prefix: Path_ = ()):
        kind, count = self._header()
        if kind == "ext":
            yield prefix, self._array(*count)
        elif kind == "map":
            for _ in range(count):
                key = self._small_value()
                if key == "__msgpack_chunked_array__":
                    raise CheckpointError(f"{self._name} stores a tensor over 1 GiB in chunks, which nbkit "
                                          "does not read; no published DALL·E checkpoint does.")
                yield from self.tensors(prefix + (str(key),))
        elif kind == "value":
            yield prefix, np.asarray(count)
        else:
            raise CheckpointError(f"{self._name}: unexpected {kind} in a checkpoint; "
                                  "delete it and download again.")


def stream_msgpack(path: str | Path):
    """Yields (path in the tree, numpy array) for each tensor of a Flax msgpack file, one
    at a time, in file order."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing. Download the model again, or point nbkit at a folder that "
            f"contains '{path.name}'."
        )
    with path.open("rb") as file:
        reader = _MsgpackReader(file, str(path))
        yield from reader.tensors()
        if file.read(1):
            raise CheckpointError(f"{path} is damaged: it has data after its end. "
                                  "Delete it and download again.")


def random_weights(shapes: Any, dtype: Any, seed: int = 0) -> Any:
    """Weights of the given shapes when no checkpoint is at hand (benchmarks): norm
    scales 1, biases 0, everything else N(0, 0.02²) as the models were initialized."""
    paths_and_specs, structure = jax.tree_util.tree_flatten_with_path(shapes)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(paths_and_specs))
    leaves = []
    for key, (path, spec) in zip(keys, paths_and_specs, strict=True):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            leaves.append(jnp.ones(spec.shape, dtype))
        elif "bias" in name:
            leaves.append(jnp.zeros(spec.shape, dtype))
        else:
            leaves.append((0.02 * jax.random.normal(key, spec.shape)).astype(dtype))
    return jax.tree_util.tree_unflatten(structure, leaves)


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


Convert = Callable[[Path_, np.ndarray], tuple[Path_, np.ndarray]]


Place = Callable[[Path_, np.ndarray], Any]


def load_params(path: str | Path, expected: Mapping[str, Any], dtype: Any,
                convert: Convert = lambda key, value: (key, value),
                fused_from: Mapping[str, tuple[str, ...]] | None = None,
                place: Place | None = None) -> dict:
    """Reads a checkpoint into the tree `expected` describes (a tree of shapes, as from
    `jax.eval_shape(model.init, ...)["params"]`), cast to `dtype` and placed on the device.

    Tensors stream from the file and are converted and placed one at a time, so host
    memory holds little more than the loaded model. Along the way:
    - `convert` maps each stored (name, tensor) to the model's;
    - a module the model fuses (`fused_from`: fused name → stored names) is made by
      concatenating the stored tensors along their first (output) axis;
    - a norm without scale gets scale 1 (the reference leaves it out of some layers,
      where it computed with scale 1), and one warning names them all: in a file that
      should have them, a missing scale is damage worth knowing about;
    - tensors the model does not use (e.g. a VQGAN's encoder) are dropped as they are read;
    - names and shapes are checked, and the file is named in every error;
    - `place(key, tensor already cast to dtype)` puts each tensor where it belongs (by
      default the default device; `nbkit.sharding` places it over a mesh).
    """
    expected = flatten_dict(expected)
    fused_from = fused_from or {}
    part_of = {key[:-2] + (part, key[-1]): key
               for key in expected if len(key) > 1 for part in fused_from.get(key[-2], ())}
    placed, waiting, wrong = {}, {}, []
    put = place or (lambda key, value: jnp.asarray(value))

    def place_checked(key, value):
        if tuple(value.shape) != tuple(expected[key].shape):
            wrong.append(f"{'/'.join(key)} has shape {tuple(value.shape)}, "
                         f"the config needs {tuple(expected[key].shape)}")
        else:
            placed[key] = put(key, np.asarray(value).astype(jnp.dtype(dtype), copy=False))

    for stored_key, stored in stream_msgpack(path):
        for key, value in split_layers({stored_key: stored}).items():
            key, value = convert(key, value)
            if key in expected:
                place_checked(key, value)
            elif key in part_of:
                fused = part_of[key]
                waiting[key] = value
                parts = [fused[:-2] + (name, fused[-1]) for name in fused_from[fused[-2]]]
                if all(part in waiting for part in parts):
                    place_checked(fused, np.concatenate([waiting.pop(part) for part in parts], axis=0))
        del stored

    missing, unit_scales = [], []
    for key, spec in expected.items():
        if key not in placed:
            if key[-1] == "scale":
                placed[key] = put(key, np.ones(spec.shape, jnp.dtype(dtype)))
                unit_scales.append("/".join(key[:-1]))
            else:
                missing.append("/".join(key))
    if unit_scales and not (missing or wrong):
        warnings.warn(f"{path} stores no scale for the norm(s) {', '.join(unit_scales)}: they compute with "
                      "scale 1, as the reference did for the layers it saved without one.", stacklevel=3)
    if missing or wrong:
        more = " ..." if len(missing) > 5 else ""
        problems = [f"missing: {', '.join(missing[:5])}{more}"] if missing else []
        problems += wrong[:5]
        raise CheckpointError(
            f"{path} does not match its config.json ({'; '.join(problems)}). The weights and "
            "the config must come from the same model: download the model folder again."
        )
    return unflatten_dict(placed)
