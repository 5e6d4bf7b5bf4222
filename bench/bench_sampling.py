"""Prompt → image tokens speed for the real DALL·E mini / Mega architectures.

Random weights of the published sizes (no download needed), condition scale 10 (so
every prompt runs a conditioned and an unconditioned row). Prints, per model and
batch size, the compile time, then seconds per batch and image tokens per second
(best of --repeats runs, after compiling).

    python bench/bench_sampling.py                       # mini and mega, 1/2/4 prompts
    python bench/bench_sampling.py --models mini --prompts 2 --repeats 3

For scale: the reference dalle-mini `generate` took 87 s for 2 mini images at
condition scale 10 on the 2-core CPU machines this project is developed on.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import add_dtype_option, compute_dtype

from nbkit.generation.sampling import SamplingSettings, compiled_sampler
from nbkit.models.dallebart import PUBLISHED_ARCHITECTURES, DalleBart
from nbkit.weights.loaders import random_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mini", "mega"],
                        choices=sorted(PUBLISHED_ARCHITECTURES))
    parser.add_argument("--prompts", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=1)
    add_dtype_option(parser)
    args = parser.parse_args()

    backend = jax.default_backend()
    dtype = compute_dtype(args)
    print(f"device: {jax.devices()[0].device_kind} ({backend}, {jax.device_count()} device(s)), "
          f"dtype {jnp.dtype(dtype).name}, jax {jax.__version__}")
    print(f"{'model':<6} {'prompts':>7} {'compile s':>10} {'s/batch':>9} {'tokens/s':>9} {'s/image':>8}")
    for name in args.models:
        config = PUBLISHED_ARCHITECTURES[name]
        model = DalleBart(config, dtype)
        params = jax.jit(lambda model=model: random_params(model))()
        sampler = compiled_sampler(model, config.image_vocab_size)
        settings = SamplingSettings(condition_scale=10.0).as_arrays(config)
        for rows in args.prompts:
            ids = np.full((rows, config.max_text_length), 1, np.int32)
            ids[:, :8] = np.arange(8)
            mask = (ids != 1).astype(np.int32)
            inputs = (params, ids, mask, ids, mask, jax.random.PRNGKey(0), settings)
            start = time.perf_counter()
            compiled = sampler.lower(*inputs).compile()
            compile_s = time.perf_counter() - start
            best = float("inf")
            for repeat in range(args.repeats):
                start = time.perf_counter()
                compiled(*inputs[:5], jax.random.PRNGKey(repeat), settings).block_until_ready()
                best = min(best, time.perf_counter() - start)
            tokens = rows * config.image_length
            print(f"{name:<6} {rows:>7} {compile_s:>10.1f} {best:>9.2f} {tokens / best:>9.1f} "
                  f"{best / rows:>8.2f}", flush=True)
        del params


if __name__ == "__main__":
    main()
