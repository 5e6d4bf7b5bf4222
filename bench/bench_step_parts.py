"""Where a decoding step's time goes: the few-row products alone, the attention over the cache alone, and
the rest, each against the read bandwidth, in one process (so the host's noise falls on all of them).

bench/bench_step.py gives the whole step against the read bound; this splits it, to say what stands
between the step and the bound. The products are `few_row_product` over every decoder kernel a step reads
(mini's real shapes, 2 rows an image); the attention is the model's `_softmax_attention` over a full
cache; both run `--steps` times in a `fori_loop`, as in decoding. `--threads 1` runs it all on one core
(`taskset`), to tell a loop that waits on memory from one that waits on its own arithmetic: at 1 thread
a memory-bound loop keeps most of its speed (one core reads at most of the bandwidth of two), a
compute-bound one halves.

    python bench/bench_step_parts.py
    python bench/bench_step_parts.py --images 4 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def best_seconds(run, *args, repeats: int = 5) -> float:
    import jax

    jax.block_until_ready(run(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def measure(images: int, steps: int) -> dict:
    import jax
    import jax.numpy as jnp

    from nbkit.models.dallebart import PUBLISHED_ARCHITECTURES, DalleBart, _softmax_attention, few_row_product
    from nbkit.weights.loaders import random_params

    config = PUBLISHED_ARCHITECTURES["mini"]
    params = jax.jit(lambda: random_params(DalleBart(config, jnp.float32)))()
    used = {"decoder": params["decoder"], "lm_head": params["lm_head"]}
    flat = jax.tree_util.tree_flatten_with_path(used)[0]
    kernels = [leaf for path, leaf in flat
               if jax.tree_util.keystr(path).endswith("['kernel']")
               and "FlaxBartAttention_1']['kv_proj" not in jax.tree_util.keystr(path)]
    weight_bytes = sum(k.size * k.dtype.itemsize for k in kernels)
    rows, width = 2 * images, config.d_model
    inner = {k.shape[1] for k in kernels} - {width}
    read = jax.jit(lambda leaves: sum(jnp.sum(leaf) for leaf in leaves))
    read_s = best_seconds(read, kernels)

    @jax.jit
    def products(kernels, x):
        def step(_, xs):
            x, wide = xs
            for kernel in kernels:       # each output feeds the next input: nothing is hoisted or skipped
                if kernel.shape[1] == width:
                    x = x + 1e-3 * few_row_product(x, kernel)[..., :width]
                else:
                    y = few_row_product(wide, kernel)
                    x, wide = x + 1e-3 * y[..., :width], wide + 1e-3 * y[..., :1]
            return x, wide
        wide = jnp.ones((rows, 1, max(inner, default=width)), jnp.float32)
        return jax.lax.fori_loop(0, steps, step, (x, wide))

    x = jax.random.normal(jax.random.PRNGKey(0), (rows, 1, width))
    products_s = best_seconds(products, kernels, x) / steps

    heads, positions = config.decoder_attention_heads, config.image_length
    head_dim = width // heads
    shape = (rows, heads, positions, head_dim)       # each layer's keys and values, as the model holds them
    cache = [jax.random.normal(jax.random.PRNGKey(n), shape) for n in range(2 * config.decoder_layers)]
    bias = jnp.zeros((1, 1, 1, positions), jnp.float32)

    @jax.jit
    def attention(cache, query):
        def step(_, query):
            for keys, values in zip(cache[::2], cache[1::2], strict=True):
                query = 0.5 * query + 0.5 * _softmax_attention(query, keys, values, bias, jnp.float32)
            return query
        return jax.lax.fori_loop(0, steps, step, query)

    query = jax.random.normal(jax.random.PRNGKey(2), (rows, heads, 1, head_dim))
    attention_s = best_seconds(attention, cache, query) / steps
    return {"weight_bytes": weight_bytes, "cache_bytes": sum(part.size * 4 for part in cache),
            "read_s": read_s, "products_s": products_s, "attention_s": attention_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=16, help="steps run per timing")
    parser.add_argument("--threads", type=int, choices=[1, 2], default=2,
                        help="1: on one core (taskset), to tell memory-bound from compute-bound")
    parser.add_argument("--whole-step", action="store_true",
                        help="also time the whole step (bench/bench_step.py's measure) in the same process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measure(args.images, args.steps)
        if args.whole_step:
            sys.path.insert(0, str(HERE))
            from bench_step import measure as measure_step

            result["step_s"] = measure_step(args.images, args.steps, "float32", begin=64)["step_s"]
        print(json.dumps(result))
        return
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--images", str(args.images),
               "--steps", str(args.steps)] + (["--whole-step"] if args.whole_step else [])
    if args.threads == 1:
        command = ["taskset", "-c", "0", *command]
    out = subprocess.run(command, capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    if out.returncode != 0:
        sys.exit(out.stderr.strip()[-2000:] or "the measurement failed")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    bandwidth = r["weight_bytes"] / r["read_s"]
    print(f"DALL·E mini, {args.images} image(s) ({2 * args.images} rows), float32, {args.threads} thread(s): "
          f"read {bandwidth / 1e9:.1f} GB/s, read bound {r['read_s'] * 1e3:.1f} ms a step")
    print(f"{'part':<30} {'ms/step':>8} {'GB/step':>8} {'GB/s':>6} {'÷bound':>7}")
    parts = [("few-row products", r["products_s"], r["weight_bytes"]),
             ("attention over the cache", r["attention_s"], r["cache_bytes"])]
    if "step_s" in r:
        parts.append(("the rest (step − both)", r["step_s"] - r["products_s"] - r["attention_s"], 0))
        parts.append(("whole step", r["step_s"], r["weight_bytes"]))
    for name, seconds, size in parts:
        rate = f"{size / seconds / 1e9:6.1f}" if size and seconds > 0 else f"{'':>6}"
        print(f"{name:<30} {seconds * 1e3:8.1f} {size / 1e9:8.3f} {rate} {seconds / r['read_s']:7.2f}")
    print("÷bound: the part's time ÷ the read bound of the step's weights (so the parts' ratios add up to "
          "the step's)")


if __name__ == "__main__":
    main()
