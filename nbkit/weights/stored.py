"""DalleBart weights stored in fewer bytes (bfloat16, or int8 with one scale per output channel),
computed in float32.

Decoding reads every decoder weight once per token, so on a CPU (and a GPU at small batches) the
step takes about as long as reading them: half the bytes, about half the time. The arithmetic
stays float32: `nbkit.models.dallebart.few_row_product` widens a stored kernel inside the loop
that reads it (never a float32 copy per call, which made bfloat16 kernels 30× slower), and an int8
kernel's per-channel scale multiplies the product's output, where it is exact.

What it costs in fidelity is rounding the weights (bfloat16: 8 bits of mantissa; int8: 1/254 of
each output channel's largest weight): the logits move a little, so sampled tokens differ from
float32's; docs/speed.md gives the measured agreement and speed. Inside the decoding loop XLA hoisted
the loop-invariant widening out of the loop (one float32 copy of every kernel, read at every step: 2×
slower than float32 storage), which `few_row_product` now prevents; `storage_for_host` times the forms
inside a loop, as decoding runs them, and keeps float32 where the narrower form is not faster.

Users choose it at load time: `Pipeline.from_pretrained(weight_storage=)` and `--weight-storage` go
through `choose_storage` (refused under a compute dtype other than float32, whose weights are already in
it; "auto" resolved here), `load_dallebart` stores each kernel as it is read (`stored_kernel`), and every
image records the storage read back from the weights (`storage_of`), which `reproduce` loads again.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nbkit.arguments import WEIGHT_STORAGES, storage_problem

STORAGES = WEIGHT_STORAGES          # float32, bfloat16, int8 (the CLI adds "auto": `choose_storage`)
KERNEL_SCALE = "kernel_scale"       # an int8 kernel's per-channel scales, beside it in the tree


def _is_kernel(path: tuple[str, ...], leaf: Any) -> bool:
    """Dense kernels (out, in) of the DalleBart tree; embeddings and norms stay as they are."""
    return path[-1] == "kernel" and getattr(leaf, "ndim", 0) == 2


def quantize_int8(kernel: Any) -> tuple[np.ndarray, np.ndarray]:
    """(out, in) float kernel → int8 kernel and float32 (out,) scales, kernel ≈ int8 · scale. On the host
    (numpy), so that loading quantizes each kernel as it is read and the same rounding comes out of
    `store_weights` and the loader."""
    kernel = np.asarray(kernel, np.float32)
    scale = np.max(np.abs(kernel), axis=1) / np.float32(127.0)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    return np.clip(np.round(kernel / scale[:, None]), -127, 127).astype(np.int8), scale


def stored_kernel(kernel: Any, storage: str) -> tuple[np.ndarray, np.ndarray | None]:
    """One (out, in) kernel on the host as `storage` keeps it: (kernel, None) or, for int8, (kernel,
    scales)."""
    if storage == "int8":
        return quantize_int8(kernel)
    if storage == "bfloat16":
        return np.asarray(kernel).astype(jnp.bfloat16), None
    return np.asarray(kernel), None


def check_storage(storage: str) -> str:
    if storage not in STORAGES:
        raise ValueError(f"weight storage must be one of {', '.join(STORAGES)} (got {storage!r}).")
    return storage


def store_weights(params: dict, storage: str) -> dict:
    """The parameter tree with every Dense kernel stored as `storage` (see the module docstring);
    int8 adds a `kernel_scale` beside each kernel. float32 returns the tree unchanged. (Loading with
    `load_dallebart(..., weight_storage=)` gives the same tree without a float32 copy of it.)"""
    if check_storage(storage) == "float32":
        return params

    def convert(tree: dict, path: tuple[str, ...]) -> dict:
        out = {}
        for name, value in tree.items():
            here = path + (name,)
            if isinstance(value, dict):
                out[name] = convert(value, here)
            elif _is_kernel(here, value):
                kernel, scale = stored_kernel(value, storage)
                out[name] = jnp.asarray(kernel)
                if scale is not None:
                    out[KERNEL_SCALE] = jnp.asarray(scale)
            else:
                out[name] = value
        return out

    return convert(params, ())


def storage_of(params: dict, dtype: Any) -> str:
    """How `params` keep their kernels, for a model computing in `dtype`: "int8" (scaled int8 kernels),
    "bfloat16" (bfloat16 kernels under float32 arithmetic) or "float32" (kernels in the compute dtype,
    the default). What each image records, read from the weights themselves so that it cannot be wrong."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    kernels = [leaf.dtype for path, leaf in leaves if getattr(path[-1], "key", None) == "kernel"
               and getattr(leaf, "ndim", 0) == 2]
    if any(kind == jnp.int8 for kind in kernels):
        return "int8"
    if jnp.dtype(dtype) == jnp.float32 and any(kind == jnp.bfloat16 for kind in kernels):
        return "bfloat16"
    return "float32"


def choose_storage(storage: str, dtype: Any) -> str:
    """The storage to load with: `storage` checked against the compute `dtype` (the narrower forms keep
    float32 arithmetic: refused under another dtype, whose weights are already in it), "auto" resolved
    on this host (`storage_for_host`; float32 under another dtype)."""
    dtype = jnp.dtype(dtype).name
    if storage != "auto":
        check_storage(storage)
    problem = storage_problem(storage, dtype)
    if problem:
        raise ValueError(f"weight_storage={storage!r}: {problem}: load with dtype='float32', or "
                         "weight_storage='float32'.")
    if storage == "auto":
        return storage_for_host("auto") if dtype == "float32" else "float32"
    return storage


NARROWER_BY = 0.9     # a narrower form is chosen only when it takes under 0.9× float32's time


def storage_for_host(storage: str, rows: int = 8, width: int = 1024, repeats: int = 5,
                     layers: int = 4, steps: int = 4) -> str:
    """`storage` if few-row products with kernels stored that way are faster here than with float32
    kernels, else "float32"; "auto": the fastest of bfloat16 and int8 that is. Timed as decoding runs
    them: `layers` kernels of DALL·E mini's width, one after another, inside a `fori_loop` of `steps`
    (the forms alternating, a few seconds). Inside the loop matters: that is where XLA may move work
    out of the loop (see the module docstring). Faster means under `NARROWER_BY` of float32's time:
    where the bytes do not decide, rounding is not worth it."""
    from nbkit.models.dallebart import few_row_product

    if storage == "float32":
        return storage
    candidates = ("bfloat16", "int8") if storage == "auto" else (check_storage(storage),)
    kernels = [np.asarray(0.02 * jax.random.normal(jax.random.PRNGKey(i), (4 * width, width)))
               for i in range(layers)]
    x = jnp.ones((rows, width), jnp.float32)

    def placed(name):
        forms = [stored_kernel(kernel, name) for kernel in kernels]
        return ([jnp.asarray(kernel) for kernel, _ in forms],
                [None if scale is None else jnp.asarray(scale) for _, scale in forms])

    forms = {name: placed(name) for name in ("float32", *candidates)}

    @jax.jit
    def decode_like(kernels, scales):
        def body(_, y):
            for kernel, scale in zip(kernels, scales, strict=True):
                z = few_row_product(y, kernel)
                y = jnp.tanh((z if scale is None else z * scale)[:, :width])
            return y

        return jax.lax.fori_loop(0, steps, body, x)

    for stored, scales in forms.values():
        decode_like(stored, scales).block_until_ready()      # compiled before any is timed
    best = dict.fromkeys(forms, float("inf"))
    for _ in range(repeats):
        for name, (stored, scales) in forms.items():
            start = time.perf_counter()
            decode_like(stored, scales).block_until_ready()
            best[name] = min(best[name], time.perf_counter() - start)
    faster = [name for name in candidates if best[name] < NARROWER_BY * best["float32"]]
    return min(faster, key=best.__getitem__) if faster else "float32"
