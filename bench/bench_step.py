"""One decoding step of DALL·E mini against the memory's read bound, and against another commit.

A step reads every decoder weight once (the cross-attention's key/value projections and the
embedding tables aside) plus the cache, so its floor is those bytes ÷ the read bandwidth. This
measures that bandwidth in the same process (`jnp.sum` over the same weights), the arithmetic's floor
(2 FLOP a weight a row ÷ the host's float32 matmul speed, measured too, so that a slow step is known
to be neither reading nor multiplying at the host's speed), the step time
(`advance` over --steps positions, random weights of the real size, condition scale 10, float32
unless --store says otherwise) and their ratio; with --against REF it runs the same measurement
on that commit (a temporary `git worktree`), alternating the two --rounds times in fresh
processes, and prints min and median of each, so the host's noise hits both alike.

    python bench/bench_step.py --against HEAD~1 --rounds 3
    python bench/bench_step.py --images 1 4 9 --store float32 bfloat16 int8
    python bench/bench_step.py --begin 128 --steps 32      # steps 128-159: past the warm-up

Prints also the first-call compile times of `start` and `advance`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(images: int, steps: int, store: str, begin: int = 1) -> dict:
    """In this process: bandwidth, step time and compile times for `images` images of mini, the steps
    timed from position `begin` (the ones before it run untimed, so the warm-up is left out)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nbkit.generation.sampling import SamplingSettings, compiled_sampler
    from nbkit.models.dallebart import PUBLISHED_ARCHITECTURES, DalleBart
    from nbkit.weights.loaders import random_params

    config = PUBLISHED_ARCHITECTURES["mini"]
    model = DalleBart(config, jnp.float32)
    params = jax.jit(lambda: random_params(model))()
    if store != "float32":
        from nbkit.weights.stored import store_weights  # absent before the storage option existed
        params = store_weights(params, store)
    used = {"decoder": params["decoder"], "lm_head": params["lm_head"]}
    flat = jax.tree_util.tree_flatten_with_path(used)[0]
    read_each_step = [leaf for path, leaf in flat
                      if "embed" not in jax.tree_util.keystr(path)
                      and "FlaxBartAttention_1']['kv_proj" not in jax.tree_util.keystr(path)]
    weight_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in read_each_step)
    read = jax.jit(lambda leaves: sum(jnp.sum(leaf.astype(jnp.float32)) for leaf in leaves))
    read(read_each_step).block_until_ready()
    read_s = []
    for _ in range(5):
        start = time.perf_counter()
        read(read_each_step).block_until_ready()
        read_s.append(time.perf_counter() - start)

    # The arithmetic's floor: each weight is one multiply-add (2 FLOP) per row, and super-conditioning
    # gives each image 2 rows; divided by the host's own float32 matmul speed, measured here too.
    product = jax.jit(lambda a, b: a @ b)
    square = jnp.ones((2048, 2048), jnp.float32)
    product(square, square).block_until_ready()
    matmul_s = []
    for _ in range(5):
        start = time.perf_counter()
        product(square, square).block_until_ready()
        matmul_s.append(time.perf_counter() - start)
    step_flops = 2 * 2 * images * sum(leaf.size for leaf in read_each_step)

    sampler = compiled_sampler(model, config.image_vocab_size)
    settings = SamplingSettings(condition_scale=10.0).as_arrays(config)
    ids = np.full((images, config.max_text_length), 1, np.int32)
    ids[:, :8] = np.arange(8)
    mask = (ids != 1).astype(np.int32)
    nothing_kept = (jnp.zeros((images, config.image_length), jnp.int32),
                    jnp.zeros((images, config.image_length), bool))
    fresh = lambda: sampler.start(params, ids, mask, ids, mask, jax.random.PRNGKey(0), settings,
                                  *nothing_kept, 0)
    start = time.perf_counter()
    state = jax.block_until_ready(fresh())
    start_compile_s = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(sampler.advance(params, state, settings, 1, 2))
    advance_compile_s = time.perf_counter() - start
    step_s = []
    for _ in range(2):
        state = jax.block_until_ready(fresh())
        if begin > 1:                                   # the same program: begin and end are traced
            state = jax.block_until_ready(sampler.advance(params, state, settings, 1, begin))
        start = time.perf_counter()
        jax.block_until_ready(sampler.advance(params, state, settings, begin, begin + steps))
        step_s.append((time.perf_counter() - start) / steps)
    cache_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state.cache))
    return {"weight_bytes": weight_bytes, "cache_bytes": cache_bytes, "bandwidth": weight_bytes / min(read_s),
            "step_s": min(step_s), "start_compile_s": start_compile_s,
            "step_flops": step_flops, "matmul_flops_s": 2 * 2048 ** 3 / min(matmul_s),
            "advance_compile_s": advance_compile_s}


def run_child(tree: Path, images: int, steps: int, store: str, begin: int = 1) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, str(HERE / "bench_step.py"), "--child", "--images", str(images),
                          "--steps", str(steps), "--store", store, "--begin", str(begin)],
                         capture_output=True, text=True, env=env, cwd=tree)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(name: str, runs: list[dict]) -> str:
    good = [r for r in runs if "error" not in r]
    if not good:
        return f"{name:<34} failed: {runs[0]['error']}"
    step = [r["step_s"] for r in good]
    bound = [r["weight_bytes"] / r["bandwidth"] for r in good]
    ratio = [r["step_s"] / (r["weight_bytes"] / r["bandwidth"]) for r in good]
    with_cache = [r["step_s"] / ((r["weight_bytes"] + r["cache_bytes"]) / r["bandwidth"]) for r in good]
    # older result files (and trees) have no compute floor: shown as nan
    compute = [r["step_flops"] / r["matmul_flops_s"] if "step_flops" in r else float("nan") for r in good]
    over_compute = [r["step_s"] / c for r, c in zip(good, compute, strict=True)]
    return (f"{name:<34} {min(step) * 1e3:7.1f} {statistics.median(step) * 1e3:7.1f} "
            f"{min(bound) * 1e3:7.1f} {min(ratio):6.2f} {statistics.median(ratio):6.2f} "
            f"{min(with_cache):6.2f} {min(compute) * 1e3:7.1f} {min(over_compute):5.2f} "
            f"{good[0]['weight_bytes'] / 1e9:6.3f} "
            f"{min(r['bandwidth'] for r in good) / 1e9:5.1f}-{max(r['bandwidth'] for r in good) / 1e9:4.1f} "
            f"{statistics.median(r['start_compile_s'] for r in good):5.1f} "
            f"{statistics.median(r['advance_compile_s'] for r in good):5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", type=int, default=[4])
    parser.add_argument("--steps", type=int, default=32, help="positions timed per run (255: a whole image)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", nargs="+", default=["float32"], choices=["float32", "bfloat16", "int8"])
    parser.add_argument("--begin", type=int, default=1,
                        help="time from this position on (1 to 256 - --steps; the steps before it run "
                             "untimed, so the warm-up and the short early cache are left out)")
    parser.add_argument("--against", default=None, help="a commit to compare with, e.g. HEAD~1")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.begin <= 256 - args.steps:
        parser.error(f"--begin must be from 1 to {256 - args.steps} for {args.steps} steps (256 positions)")
    if args.child:
        print(json.dumps(measure(args.images[0], args.steps, args.store[0], args.begin)))
        return

    root = HERE.parent
    trees = {"this tree": root}
    with tempfile.TemporaryDirectory() as scratch:
        if args.against:
            other = Path(scratch) / "against"
            subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(other), args.against],
                           check=True, capture_output=True)
            trees[args.against] = other
        try:
            runs = {(tree, images, store): []
                    for tree in trees for images in args.images for store in args.store}
            for _ in range(args.rounds):   # alternate, so the host's noise falls on every variant alike
                for tree, images, store in runs:
                    runs[tree, images, store].append(run_child(trees[tree], images, args.steps, store,
                                                                args.begin))
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(other)],
                               capture_output=True)
    print(f"DALL·E mini, random weights, condition scale 10, {args.steps} steps timed per run from "
          f"position {args.begin}, "
          f"{args.rounds} alternating rounds, {os.cpu_count()} CPUs (a shared host: compare rows of one run)")
    print(f"{'variant':<34} {'step ms':>7} {'median':>7} {'bound':>7} {'÷bound':>6} {'median':>6} "
          f"{'÷+cache':>6} {'flops':>7} {'÷flops':>5} {'GB/step':>6} {'GB/s read':>10} {'start':>5} "
          f"{'adv.':>5}")
    for (tree, images, store), result in runs.items():
        print(summary(f"{tree}, {images} image(s), {store}", result))
    print("step ms: min over runs of (advance time ÷ steps); bound: weight bytes a step reads ÷ the read "
          "bandwidth measured in the same process; ÷bound: min and median of step ÷ bound; ÷+cache: "
          "with the cache's bytes in the bound; flops: the arithmetic's floor in ms (2 FLOP a weight a row, "
          "2 rows an image, ÷ this process's float32 2048² matmul speed), ÷flops: step ÷ it; start/adv.: "
          "first-call seconds (compile + one run)")


if __name__ == "__main__":
    main()
