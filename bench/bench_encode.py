"""Pixels → image tokens (VQGAN encoder + nearest codebook entry), at the real architecture's size.

Random weights of the published size (dalle-mini/vqgan_imagenet_f16_16384), and optionally the
tiny golden model. Prints compile time, then the best of --repeats timed runs as seconds per
batch and images per second.

    python bench/bench_encode.py
    python bench/bench_encode.py --batches 1 4 --tiny tests/fixtures/golden/vqgan-tiny
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import add_dtype_option, compute_dtype

from nbkit.models import vqgan
from nbkit.weights.loaders import load_vqgan_encoder, random_params


def timed(model, params, pixels, repeats: int) -> tuple[float, float]:
    """(compile seconds, best seconds per call) of the compiled encoder."""
    function = vqgan.compiled_encoder(model)
    start = time.perf_counter()
    jax.block_until_ready(function(params, pixels))
    compile_s = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(params, pixels))
        best = min(best, time.perf_counter() - start)
    return compile_s, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", default=None, help="also time this model folder (the golden vqgan-tiny)")
    add_dtype_option(parser)
    args = parser.parse_args()
    dtype = compute_dtype(args)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), dtype {jnp.dtype(dtype).name}, "
          f"jax {jax.__version__}")
    print(f"{'model':<14} {'batch':>5} {'first call s':>12} {'s/batch':>9} {'images/s':>9}")
    models = []
    if args.tiny:
        models.append(("tiny", *load_vqgan_encoder(args.tiny, dtype)))
    published = vqgan.VQGANEncoder(vqgan.PUBLISHED_ARCHITECTURE, dtype)
    models.append(("published", published, jax.jit(lambda: random_params(published))()))
    for name, model, params in models:
        side = model.config.resolution
        for batch in args.batches:
            pixels = jnp.asarray(np.random.default_rng(0).random((batch, side, side, 3)), jnp.float32)
            compile_s, seconds = timed(model, params, pixels, args.repeats)
            print(f"{name:<14} {batch:>5} {compile_s:>12.1f} {seconds:>9.3f} {batch / seconds:>9.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
