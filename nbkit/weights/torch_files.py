"""PyTorch state dicts (`.pth`, `.pt`, `.safetensors`) → numpy arrays, without torch and without
trusting the file.

A `.pth` is a pickle, and a pickle can call any function it names: `torch.load` on a crafted file
runs its code. Hand-written here because no library reads torch's formats without torch:
`_StateDictUnpickler` resolves only the globals a state dict needs (tensor and parameter rebuilds,
typed storages, `OrderedDict`) to nbkit's own harmless stand-ins, and refuses every other global
before anything is called, naming it. Tensors become numpy arrays built from the storage bytes with
bounds checked against the storage's size.

Both torch formats are read: the zip format (torch ≥ 1.6: `<name>/data.pkl` plus one entry per
storage, `<name>/data/<key>`) and the legacy stream (torch < 1.6: magic number, protocol and
system-info pickles, the main pickle, the list of storage keys, then each storage as an 8-byte
element count and its raw bytes). `.safetensors` files go through the `safetensors` package's
numpy API (the format holds no code at all).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import jax.numpy as jnp
import numpy as np

from nbkit.weights.checkpoint import CheckpointError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# Typed storages a state dict may name, and the numpy dtype of their elements.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": jnp.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
MAX_TENSOR_DIMS = 8


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint's pickle names something a state dict never needs (it could run code)."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGE_DTYPES[self.name])


@dataclasses.dataclass
class _Storage:
    """A storage named by a persistent id; its bytes are found after unpickling (`fill`)."""
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclasses.dataclass
class _TensorRef:
    """What `_rebuild_tensor_v2` returns: made into an array once every storage has its bytes."""
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> _TensorRef:
    """Stands in for torch._utils._rebuild_tensor_v2 (and _rebuild_tensor): records the view."""
    ints = (isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)
            and all(isinstance(n, int) and n >= 0 for n in size + stride + (offset,)))
    ints = ints and len(size) == len(stride) <= MAX_TENSOR_DIMS
    if not isinstance(storage, _Storage) or not ints:
        raise CheckpointError("a tensor in the checkpoint is malformed (storage, offset, size, stride).")
    return _TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    """Stands in for torch._utils._rebuild_parameter: a parameter is its tensor."""
    if not isinstance(data, _TensorRef):
        raise CheckpointError("a parameter in the checkpoint holds no tensor.")
    return data


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


_ALLOWED: dict[tuple[str, str], Callable[..., Any] | _StorageType] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, name: str, storage_keys: set[str] | None):
        super().__init__(file)
        self._name, self._storage_keys = name, storage_keys
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        found = _ALLOWED.get((module, name))
        if found is None:
            raise UnsafeCheckpointError(
                f"{self._name} was refused: its pickle asks for {module}.{name}, which a PyTorch state "
                "dict never needs (a crafted file can run code this way). Nothing from it was run. Use "
                "the official release file, or a .safetensors copy.")
        # A fresh object per lookup, so that a pickle's BUILD can alter only its own copy.
        if isinstance(found, _StorageType):
            return _StorageType(found.name)
        return lambda *args: found(*args)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and isinstance(pid[4], int) and pid[4] >= 0):
            raise CheckpointError(f"{self._name}: a storage reference in its pickle is malformed.")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if self._storage_keys is not None and key not in self._storage_keys:
            raise CheckpointError(f"{self._name}: its pickle names a storage ({key!r}) the file lacks.")
        storage = self.storages.setdefault(key, _Storage(key, storage_type.dtype, numel))
        if len(pid) == 6 and pid[5] is not None:   # legacy view: (view key, offset, size)
            view_key, view_offset, view_size = pid[5]
            return _Storage(view_key, storage.dtype, view_size, _LegacyView(storage, view_offset))
        return storage


@dataclasses.dataclass
class _LegacyView:
    base: _Storage
    offset: int


def _storage_array(storage: _Storage, name: str) -> np.ndarray:
    data = storage.data
    if isinstance(data, _LegacyView):
        base = _storage_array(data.base, name)
        data = base[data.offset:data.offset + storage.numel]
    if data is None or data.size < storage.numel:
        raise CheckpointError(f"{name} is damaged: storage {storage.key} holds fewer elements than its "
                              "tensors use. Delete the file and download it again.")
    return data


def _materialize(value: Any, name: str) -> Any:
    if isinstance(value, _TensorRef):
        data = _storage_array(value.storage, name)
        last = value.offset + sum((n - 1) * s for n, s in zip(value.size, value.stride, strict=True))
        if any(n == 0 for n in value.size):
            return np.zeros(value.size, data.dtype)
        if last >= data.size:
            raise CheckpointError(f"{name} is damaged: a tensor reaches past the end of its storage.")
        strides = tuple(s * data.itemsize for s in value.stride)
        view = np.lib.stride_tricks.as_strided(data[value.offset:], value.size, strides, writeable=False)
        return np.array(view)
    if isinstance(value, dict):
        return type(value)((key, _materialize(item, name)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_materialize(item, name) for item in value)
    return value


def _unpickle(file: BinaryIO, name: str, storage_keys: set[str] | None) -> tuple[Any, _StateDictUnpickler]:
    unpickler = _StateDictUnpickler(file, name, storage_keys)
    try:
        return unpickler.load(), unpickler
    except (CheckpointError, MemoryError):
        raise
    except Exception as error:   # a damaged pickle: any of pickle's many errors
        raise CheckpointError(f"{name} is damaged or not a PyTorch checkpoint ({type(error).__name__}: "
                              f"{str(error)[:120]}). Delete it and download it again.") from None


def _read_zip(path: Path) -> Any:
    name = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(f"{name} is damaged: {error}. Delete it and download it again.") from None
    with archive:
        pickles = [entry for entry in archive.namelist() if entry.endswith("data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{name} is a zip but not a PyTorch checkpoint (no single data.pkl).")
        prefix = pickles[0][: -len("data.pkl")]
        storage_names = {entry[len(prefix) + 5:] for entry in archive.namelist()
                         if entry.startswith(prefix + "data/")}
        byteorder = "little"
        if prefix + "byteorder" in archive.namelist():
            byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
        try:
            with archive.open(pickles[0]) as pickled:
                state, unpickler = _unpickle(io.BytesIO(pickled.read()), name, storage_names)
            for key, storage in unpickler.storages.items():
                raw = archive.read(prefix + "data/" + key)
                dtype = storage.dtype.newbyteorder("<" if byteorder == "little" else ">")
                storage.data = np.frombuffer(raw, dtype, count=len(raw) // dtype.itemsize).astype(
                    storage.dtype, copy=False)
        except (zipfile.BadZipFile, EOFError, OSError) as error:   # CRC mismatch, truncated entry
            raise CheckpointError(f"{name} is damaged ({error}). Delete it and download it again.") from None
    return _materialize(state, name)


def _read_legacy(path: Path) -> Any:
    name = str(path)
    with path.open("rb") as file:
        header = [_unpickle(file, name, None)[0] for _ in range(3)]
        if header[0] != _LEGACY_MAGIC or header[1] != _LEGACY_PROTOCOL or not isinstance(header[2], dict):
            raise CheckpointError(f"{name} is not a PyTorch checkpoint (neither a zip nor torch's legacy "
                                  "stream). Check that it is the right file.")
        little = bool(header[2].get("little_endian", True))
        state, unpickler = _unpickle(file, name, None)
        keys, _ = _unpickle(file, name, None)
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise CheckpointError(f"{name} is damaged: its list of storages is malformed.")
        for key in keys:
            count = file.read(8)
            storage = unpickler.storages.get(key)
            if len(count) != 8 or storage is None:
                raise CheckpointError(f"{name} is damaged: it ends too early or names an unknown storage.")
            numel = int.from_bytes(count, "little" if little else "big")
            dtype = storage.dtype.newbyteorder("<" if little else ">")
            raw = file.read(numel * dtype.itemsize)
            if len(raw) != numel * dtype.itemsize:
                raise CheckpointError(f"{name} is damaged: it ends too early (an interrupted download?). "
                                      "Delete it and download it again.")
            storage.data = np.frombuffer(raw, dtype).astype(storage.dtype, copy=False)
    return _materialize(state, name)


def read_torch_file(path: str | Path) -> Any:
    """What a `.pth` holds (dicts of numpy arrays), in either torch format; refuses any pickle that
    names more than a state dict needs, before running anything."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing. Download the model again, or give the path of a .pth "
                              "or .safetensors file.")
    return _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The flat `name → array` state dict of a `.pth` (a bare state dict, or one under `params_ema`,
    `params` or `state_dict` as training frameworks save it) or of a `.safetensors` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        if not path.is_file():
            raise CheckpointError(f"{path} is missing. Download the model again.")
        try:
            return dict(load_file(path))
        except (SafetensorError, ValueError, OSError) as error:
            raise CheckpointError(f"{path} is damaged or not a safetensors file ({error}). Delete it and "
                                  "download it again.") from None
    content = read_torch_file(path)
    for wrapper in ("params_ema", "params", "state_dict"):
        if isinstance(content, dict) and isinstance(content.get(wrapper), dict):
            content = content[wrapper]
            break
    if not isinstance(content, dict) or not all(
            isinstance(key, str) and isinstance(value, np.ndarray) for key, value in content.items()):
        raise CheckpointError(f"{path} holds no state dict (a mapping of names to tensors).")
    return {key.removeprefix("module."): value for key, value in content.items()}
