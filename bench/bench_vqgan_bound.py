"""The VQGAN decode against this host's float32 matmul throughput: how close its convolutions run to it.

The decoder (dalle-mini/vqgan_imagenet_f16_16384's size, random weights, float32) is nearly all
convolutions. Their FLOPs are counted from the traced program (each `conv_general_dilated`: 2 · output
elements · kernel window · input channels; the attention's products counted apart), and the bound is
those FLOPs ÷ the float32 matmul throughput measured in the same process (the best of a square product
and the decoder's largest convolution as one im2col product): the time the convolutions would take if
they ran as fast as this host multiplies matrices. Prints the decode time (best of --repeats), the bound
and their ratio (issue 27's target: ≤ 1.5×).

    python bench/bench_vqgan_bound.py
    python bench/bench_vqgan_bound.py --batch 4 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from nbkit.models import vqgan
from nbkit.weights.loaders import random_params


def _sub_jaxprs(value):
    """The jaxprs inside an equation's parameter (pjit, custom_jvp, cond branches …)."""
    if hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _sub_jaxprs(item)


def product_flops(jaxpr) -> dict[str, float]:
    """FLOPs of a jaxpr's convolutions and of its other matrix products (dot_general), nested ones too."""
    total = {"conv": 0.0, "dot": 0.0, "largest_conv": (0.0, None)}
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            spec = eqn.params["dimension_numbers"].rhs_spec    # (out features, in features, *spatial)
            window = rhs[spec[1]] * math.prod(rhs[d] for d in spec[2:])
            flops = 2.0 * math.prod(eqn.outvars[0].aval.shape) * window
            total["conv"] += flops
            if flops > total["largest_conv"][0]:
                out_features = rhs[spec[0]]
                rows = math.prod(eqn.outvars[0].aval.shape) // out_features
                total["largest_conv"] = (flops, (rows, window, out_features))
        elif name == "dot_general":
            (contracting, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            depth = math.prod(lhs[d] for d in contracting)
            total["dot"] += 2.0 * math.prod(eqn.outvars[0].aval.shape) * depth
        for value in eqn.params.values():
            for sub in _sub_jaxprs(value):
                inner = product_flops(sub)
                total["conv"] += inner["conv"]
                total["dot"] += inner["dot"]
                if inner["largest_conv"][0] > total["largest_conv"][0]:
                    total["largest_conv"] = inner["largest_conv"]
    return total


def best_seconds(function, *args, repeats: int) -> float:
    jax.block_until_ready(function(*args))          # compiled (and run once) before any is timed
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(shape: tuple[int, int, int], repeats: int) -> float:
    """float32 (m, k) · (k, n) on this host, in GFLOP/s (best of `repeats`)."""
    m, k, n = shape
    a = jax.random.normal(jax.random.PRNGKey(0), (m, k), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (k, n), jnp.float32)
    return 2.0 * m * k * n / best_seconds(jax.jit(jnp.dot), a, b, repeats=repeats) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1, help="images decoded at once (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs; the best counts (default 2)")
    args = parser.parse_args()

    decoder = vqgan.VQGANDecoder(vqgan.PUBLISHED_ARCHITECTURE, jnp.float32)
    params = jax.jit(lambda: random_params(decoder))()
    codes = jnp.asarray(np.random.default_rng(0).integers(0, decoder.config.n_embed, (args.batch, 256)),
                        jnp.int32)
    apply = lambda p, c: decoder.apply({"params": p}, c)
    counted = product_flops(jax.make_jaxpr(apply)(params, codes).jaxpr)
    largest = counted["largest_conv"][1]
    throughput = {f"square {2048}³": matmul_gflops((2048, 2048, 2048), args.repeats),
                  f"largest conv as im2col {largest[0]}×{largest[1]}×{largest[2]}":
                      matmul_gflops(largest, args.repeats)}
    gflops = max(throughput.values())
    decode_s = best_seconds(jax.jit(apply), params, codes, repeats=args.repeats)
    bound_s = counted["conv"] / (gflops * 1e9)

    print(f"VQGAN decode, {args.batch} image(s), float32, random weights of the real size; "
          f"{os.cpu_count()} CPUs, {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"jax {jax.__version__}")
    for name, value in throughput.items():
        print(f"  matmul {name:<44} {value:8.1f} GFLOP/s")
    print(f"  convolutions                 {counted['conv'] / 1e9:9.1f} GFLOP "
          f"(attention's products {counted['dot'] / 1e9:.1f} GFLOP more)")
    achieved = counted["conv"] / decode_s / 1e9
    print(f"  decode                       {decode_s:9.2f} s   ({achieved:.1f} GFLOP/s of convolutions)")
    print(f"  bound (convs ÷ {gflops:.1f} GFLOP/s) {bound_s:9.2f} s")
    print(f"  decode ÷ bound               {decode_s / bound_s:9.2f}×   (target ≤ 1.5×)")


if __name__ == "__main__":
    main()
