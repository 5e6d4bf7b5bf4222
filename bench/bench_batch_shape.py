"""What one batch shape costs: milliseconds per image per decoder step when a batch of N images runs in a
shape of M rows (every batch is padded to `max_batch`, so that an image's tokens do not depend on the batch
it was drawn in; see docs/speed.md). M = N is what padding to buckets (the rule before) ran.

    python bench/bench_batch_shape.py                                  # mini's size, random weights, bf16
    python bench/bench_batch_shape.py --images 1 4 --shapes 1 4 8 --steps 8 --repeats 3
    python bench/bench_batch_shape.py --tiny --dtype float32           # the tiny fixtures: a quick check

Random weights of the published size (nothing downloaded), condition scale 10 (two rows an image), a few
decoder steps from the first token (`--steps`), after one untimed call of each shape; min and median of
`--repeats`. Also checks that image 0's tokens over those steps are the same in every shape it ran in.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import DTYPES, add_dtype_option
from device_worker import build, sized

from nbkit.generation import sharding
from nbkit.generation.request import ImageTask
from nbkit.generation.sampling import SamplingSettings


def steps_seconds(pipe, images: int, steps: int) -> tuple[float, np.ndarray]:
    """Seconds for `steps` decoder steps of a batch of `images` (padded to the pipe's shape), and row 0's
    tokens."""
    settings = SamplingSettings(condition_scale=10.0)
    sampler = pipe.sampler(settings)
    traced = jax.tree.map(lambda v: sharding.put(v, sharding.replicated(pipe.mesh)),
                          settings.as_arrays(pipe.model.config))
    tasks = [ImageTask(f"prompt {i}", 7, i, 0) for i in range(images)]
    tasks += [tasks[0]] * (pipe.max_batch - images)
    state, _ = pipe._start(sampler, tasks, traced)
    jax.block_until_ready(state.tokens)
    began = time.perf_counter()
    state = sampler.advance(pipe.params, state, traced, 1, 1 + steps)
    state.tokens.block_until_ready()
    return time.perf_counter() - began, np.asarray(state.tokens)[0, :1 + steps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mini", choices=("mini", "mega"))
    parser.add_argument("--tiny", action="store_true", help="the tiny fixtures (a quick check)")
    parser.add_argument("--images", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--shapes", nargs="+", type=int, default=[4, 8],
                        help="batch shapes (max_batch) to run each count in, besides its own size")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    add_dtype_option(parser)
    args = parser.parse_args()
    dtype = DTYPES[args.dtype or "bfloat16"]
    pipe = build(args.model, dtype, args.tiny, max_batch=max(args.images + args.shapes))
    print(f"{'tiny' if args.tiny else args.model} (random), {jnp.dtype(dtype).name}, "
          f"{jax.devices()[0].device_kind}, jax {jax.__version__}; {args.steps} steps, "
          f"best and median of {args.repeats}")
    print(f"{'images':>6} {'shape':>5} {'ms/image/step min':>18} {'median':>7}  row 0 as in its own size")
    for images in args.images:
        own = None
        for shape in sorted({images, *(s for s in args.shapes if s >= images)}):
            shaped = sized(pipe, shape)
            steps_seconds(shaped, images, args.steps)                       # compiles
            runs = [steps_seconds(shaped, images, args.steps) for _ in range(args.repeats)]
            per = [seconds / (images * args.steps) * 1e3 for seconds, _ in runs]
            tokens = runs[0][1]
            own = tokens if own is None else own
            print(f"{images:>6} {shape:>5} {min(per):>18.1f} {statistics.median(per):>7.1f}  "
                  f"{'yes' if (tokens == own).all() else 'no'}", flush=True)


if __name__ == "__main__":
    main()
