"""DalleBart weights stored in fewer bytes (bfloat16, or int8 with one scale per output channel),
computed in float32.

Decoding reads every decoder weight once per token, so on a CPU (and a GPU at small batches) the
step takes about as long as reading them: half the bytes, about half the time. The arithmetic
stays float32: `nbkit.models.dallebart.few_row_product` widens a stored kernel inside the loop
that reads it (never a float32 copy per call, which made bfloat16 kernels 30× slower), and an int8
kernel's per-channel scale multiplies the product's output, where it is exact.

What it costs in fidelity is rounding the weights (bfloat16: 8 bits of mantissa; int8: 1/254 of
each output channel's largest weight): the logits move a little, so sampled tokens differ from
float32's; docs/speed.md gives the measured agreement and speed. `storage_for_host` keeps float32
where the narrower form is not faster.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp

STORAGES = ("float32", "bfloat16", "int8")


def _is_kernel(path: tuple[str, ...], leaf: Any) -> bool:
    """Dense kernels (out, in) of the DalleBart tree; embeddings and norms stay as they are."""
    return path[-1] == "kernel" and getattr(leaf, "ndim", 0) == 2


def quantize_int8(kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(out, in) float kernel → int8 kernel and float32 (out,) scales, kernel ≈ int8 · scale."""
    kernel = jnp.asarray(kernel, jnp.float32)
    scale = jnp.max(jnp.abs(kernel), axis=1) / 127.0
    scale = jnp.where(scale > 0, scale, 1.0)
    return jnp.clip(jnp.round(kernel / scale[:, None]), -127, 127).astype(jnp.int8), scale


def store_weights(params: dict, storage: str) -> dict:
    """The parameter tree with every Dense kernel stored as `storage` (see the module docstring);
    int8 adds a `kernel_scale` beside each kernel. float32 returns the tree unchanged."""
    if storage not in STORAGES:
        raise ValueError(f"weight storage must be one of {', '.join(STORAGES)} (got {storage!r}).")
    if storage == "float32":
        return params

    def convert(tree: dict, path: tuple[str, ...]) -> dict:
        out = {}
        for name, value in tree.items():
            here = path + (name,)
            if isinstance(value, dict):
                out[name] = convert(value, here)
            elif _is_kernel(here, value) and storage == "bfloat16":
                out[name] = jnp.asarray(value).astype(jnp.bfloat16)
            elif _is_kernel(here, value):
                out[name], out["kernel_scale"] = jax.jit(quantize_int8)(value)
            else:
                out[name] = value
        return out

    return convert(params, ())


def storage_for_host(storage: str, rows: int = 8, width: int = 1024, repeats: int = 5) -> str:
    """`storage` if a few-row product with a kernel stored that way is faster here than with a
    float32 kernel (timed on a kernel of DALL·E mini's width, about a second), else "float32"."""
    from nbkit.models.dallebart import few_row_product

    if storage == "float32":
        return storage
    kernel = 0.02 * jax.random.normal(jax.random.PRNGKey(0), (4 * width, width))
    x = jnp.ones((rows, width), jnp.float32)
    forms = {"float32": (kernel, None), storage: (kernel.astype(jnp.bfloat16), None) if storage == "bfloat16"
             else quantize_int8(kernel)}

    def product(kernel, scale):
        y = few_row_product(x, kernel)
        return y if scale is None else y * scale

    best = {}
    for name, (stored, scale) in forms.items():
        run = jax.jit(product)
        run(stored, scale).block_until_ready()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(stored, scale).block_until_ready()
            times.append(time.perf_counter() - start)
        best[name] = min(times)
    return storage if best[storage] < best["float32"] else "float32"
