"""What a variation costs against a fresh generation: the kept rows are run through the decoder in one
parallel pass (a row of 16 positions per call) instead of one step per token, so keeping more rows should
cost less, never more.

The real DALL·E mini architecture with random weights (nothing can be downloaded here), or `--tiny` for
the fixture models. Prints, per keep-rows value, the best seconds for the image tokens over --repeats
runs and the ratio to a fresh generation of the same images (keep-rows 0 is a fresh generation).

    python bench/bench_vary.py                          # real mini size, 1 image, CPU: a few minutes
    python bench/bench_vary.py --images 4 --keep-rows 0 8 12
    python bench/bench_vary.py --tiny
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
from _common import add_dtype_option, compute_dtype
from bench_generate import PROMPT, random_pipeline

from nbkit.generation.events import Done
from nbkit.generation.from_image import SourceImage, Vary
from nbkit.generation.pipeline import Pipeline

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures" / "golden"


def tokens_seconds(pipe: Pipeline, request) -> float:
    return next(e for e in pipe.stream(request) if isinstance(e, Done)).timings["tokens"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1, help="variations per run (one batch)")
    parser.add_argument("--keep-rows", type=int, nargs="+", default=[0, 4, 8, 12, 15])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="the tiny fixture models instead")
    add_dtype_option(parser)
    args = parser.parse_args()
    dtype = compute_dtype(args)
    if args.tiny:
        pipe = Pipeline.from_pretrained(FIXTURES / "dallebart-tiny", FIXTURES / "vqgan-tiny", dtype=dtype,
                                        progress=False, max_batch=args.images)
    else:
        pipe = random_pipeline("mini", dtype, max_batch=args.images)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), dtype {jnp.dtype(dtype).name}, "
          f"jax {jax.__version__}; {pipe.name}, {args.images} image(s) per run, best of {args.repeats}")
    made = pipe.generate([PROMPT], n_images=1, seed=0).images[0]        # the source; compiles
    source = SourceImage(made.tokens, PROMPT)
    print(f"{'keep rows':>9} {'kept tokens':>11} {'tokens s':>9} {'vs fresh':>9}")
    fresh = None
    for rows in args.keep_rows:
        edits = [Vary(keep_rows=rows, n_images=args.images, seed=1 + r) for r in range(args.repeats)]
        seconds = min(tokens_seconds(pipe, edit.request(source)) for edit in edits)
        fresh = fresh if fresh is not None else (seconds if rows == 0 else None)
        ratio = f"{seconds / fresh:9.2f}" if fresh else f"{'-':>9}"
        print(f"{rows:>9} {rows * 16:>11} {seconds:>9.2f} {ratio}")


if __name__ == "__main__":
    main()
