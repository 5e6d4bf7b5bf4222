"""Where the first call's time goes (tracing, XLA compile, running), and what the persistent
compilation cache saves a second process.

DALL·E mini with random weights, 4 images, condition scale 10: `start` (encoder, first step, kept
prefix) and `advance` (the token loop) are traced, lowered, compiled and run once, each timed, in a
fresh process; then a second fresh process does the same with the compilation cache the first one
filled (as a restarted Colab session does with the cache on Drive).

    python bench/bench_compile.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(images: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nbkit.generation.sampling import SamplingSettings, compiled_sampler
    from nbkit.models.dallebart import PUBLISHED_ARCHITECTURES, DalleBart
    from nbkit.weights.loaders import random_params

    hits: list[str] = []
    jax.monitoring.register_event_listener(
        lambda name, **kw: hits.append(name) if name.endswith("cache_hits") else None)
    config = PUBLISHED_ARCHITECTURES["mini"]
    model = DalleBart(config, jnp.float32)
    params = jax.block_until_ready(jax.jit(lambda: random_params(model))())
    sampler = compiled_sampler(model, config.image_vocab_size)
    settings = SamplingSettings(condition_scale=10.0).as_arrays(config)
    ids = np.full((images, config.max_text_length), 1, np.int32)
    ids[:, :8] = np.arange(8)
    mask = (ids != 1).astype(np.int32)
    length = config.image_length
    kept = (jnp.zeros((images, length), jnp.int32), jnp.zeros((images, length), bool))
    start_args = (params, ids, mask, ids, mask, jax.random.PRNGKey(0), settings, *kept, 0)
    times, hits_before = {}, 0

    def timed(name, fn):
        begin = time.perf_counter()
        out = jax.block_until_ready(fn())
        times[name] = round(time.perf_counter() - begin, 2)
        return out

    traced = timed("start: trace+lower", lambda: sampler.start.lower(*start_args))
    compiled = timed("start: compile", traced.compile)
    state = timed("start: run", lambda: compiled(*start_args))
    hits_before = len(hits)
    traced = timed("advance: trace+lower", lambda: sampler.advance.lower(params, state, settings, 1, 2))
    compiled = timed("advance: compile", traced.compile)
    timed("advance: run 1 step", lambda: compiled(params, state, settings, 1, 2))
    return {"times": times, "cache_hits": [hits_before, len(hits) - hits_before]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.images)))
        return
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache,
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
               "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
        runs = []
        for _ in ("empty cache", "cache filled by the first process"):
            out = subprocess.run([sys.executable, __file__, "--child", "--images", str(args.images)],
                                 capture_output=True, text=True, env=env)
            if out.returncode:
                sys.exit(out.stderr.strip().splitlines()[-1])
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        size = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file())
    print(f"DALL·E mini, random weights, {args.images} images; seconds "
          "(a shared host: compare columns of one run)")
    print(f"{'part':<24} {'1st process':>12} {'2nd process':>12}")
    for part in runs[0]["times"]:
        print(f"{part:<24} {runs[0]['times'][part]:>12.2f} {runs[1]['times'][part]:>12.2f}")
    for run in runs:
        run["total"] = sum(v for k, v in run["times"].items() if "run" not in k)
    print(f"{'trace+compile in all':<24} {runs[0]['total']:>12.2f} {runs[1]['total']:>12.2f}")
    print(f"cache hits (start, advance): {runs[0]['cache_hits']} then {runs[1]['cache_hits']}; "
          f"cache {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
