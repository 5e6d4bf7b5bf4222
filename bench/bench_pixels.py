"""Image tokens → pixels (VQGAN) and pixels → CLIP scores, at the real architectures' sizes.

Random weights of the published sizes: dalle-mini/vqgan_imagenet_f16_16384 and
openai/clip-vit-base-patch32 / clip-vit-large-patch14. Prints compile time, then the
best of --repeats timed runs as seconds per batch and images per second.

    python bench/bench_pixels.py
    python bench/bench_pixels.py --batches 1 4 --clip clip-b32 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import add_dtype_option, compute_dtype

from nbkit.models import clip, vqgan
from nbkit.weights.loaders import random_params


def timed(function, *args, repeats: int) -> tuple[float, float]:
    """(compile seconds, best seconds per call)."""
    start = time.perf_counter()
    compiled = jax.jit(function).lower(*args).compile()
    compile_s = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - start)
    return compile_s, best


def report(name: str, batch: int, compile_s: float, seconds: float) -> None:
    print(f"{name:<14} {batch:>5} {compile_s:>10.1f} {seconds:>9.3f} {batch / seconds:>9.2f}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--clip", nargs="+", default=["clip-b32", "clip-l14"],
                        choices=sorted(clip.PUBLISHED_ARCHITECTURES))
    parser.add_argument("--repeats", type=int, default=2)
    add_dtype_option(parser)
    args = parser.parse_args()
    backend = jax.default_backend()
    dtype = compute_dtype(args)
    print(f"device: {jax.devices()[0].device_kind} ({backend}), dtype {jnp.dtype(dtype).name}, "
          f"jax {jax.__version__}")
    print(f"{'step':<14} {'batch':>5} {'compile s':>10} {'s/batch':>9} {'images/s':>9}")

    decoder = vqgan.VQGANDecoder(vqgan.PUBLISHED_ARCHITECTURE, dtype)
    params = random_params(decoder)
    for batch in args.batches:
        codes = jnp.asarray(np.random.default_rng(0).integers(0, decoder.config.n_embed, (batch, 256)),
                            jnp.int32)
        report("vqgan decode", batch, *timed(lambda p, c: decoder.apply({"params": p}, c), params, codes,
                                             repeats=args.repeats))
    del params

    for name in args.clip:
        model = clip.CLIP(clip.PUBLISHED_ARCHITECTURES[name], dtype)
        params = jax.jit(lambda model=model: random_params(model))()
        size = model.config.vision.image_size
        ids = jnp.ones((1, model.config.text.max_position_embeddings), jnp.int32)
        for batch in args.batches:
            pixels = jnp.zeros((batch, size, size, 3), jnp.float32)
            score = lambda p, px, model=model, ids=ids: model.apply({"params": p}, ids,
                                                                    jnp.ones_like(ids), px)
            report(f"{name} score", batch, *timed(score, params, pixels, repeats=args.repeats))
        del params


if __name__ == "__main__":
    main()
