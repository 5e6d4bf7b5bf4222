"""Prompt translation at the real opus-mt-zh-en size (6+6 layers, d_model 512, 65,001-entry vocabulary),
random weights: milliseconds to translate 1 prompt and 8 prompts (16-token bucket, 32 new tokens — the
most the translator decodes for that bucket — beam search with 4 beams as the checkpoints ask, and greedy).

    python bench/bench_translate.py [--dtype float32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from _common import add_dtype_option, compute_dtype

from nbkit.models.marian import PUBLISHED_ARCHITECTURES, Marian, param_shapes
from nbkit.text.marian_search import GenerationConfig, beam_search, greedy_search
from nbkit.weights.checkpoint import random_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_dtype_option(parser)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = PUBLISHED_ARCHITECTURES["opus-mt-base"]
    model = Marian(config, compute_dtype(args))
    params = random_weights(param_shapes(model), model.dtype, seed=0)
    pad = config.pad_token_id
    generation = GenerationConfig(num_beams=4, bad_words_ids=(pad,), eos_token_id=0, pad_token_id=pad,
                                  decoder_start_token_id=pad, renormalize_logits=True)
    rng = np.random.default_rng(0)
    print(f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind}), {model.dtype.__name__}")
    for prompts in (1, 8):
        ids = rng.integers(2, pad, (prompts, 16)).astype(np.int32)
        ids[:, -1] = 0
        mask = np.ones_like(ids)
        for name, search in (("beam x4", beam_search), ("greedy", greedy_search)):
            def run(search=search, ids=ids, mask=mask):
                return jax.block_until_ready(search(model, params, ids, mask, generation, 32))

            start = time.perf_counter()
            run()
            first = time.perf_counter() - start
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            print(f"{prompts} prompt(s), {name}: {1000 * min(times):.0f} ms (first call with compiling "
                  f"{first:.1f} s)")


if __name__ == "__main__":
    main()
