"""Generates one image with a persistent compilation cache (see test_pipeline.py) and prints
how many compiled programs came from the cache."""

import json
import sys

import jax

from nbkit.generation.pipeline import Pipeline

hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name.endswith("cache_hits") else None)
dallebart, vqgan, cache = sys.argv[1:4]
pipe = Pipeline.from_pretrained(dallebart, vqgan, dtype="float32", progress=False, max_batch=1,
                                compilation_cache=cache)
tokens = pipe.generate(["a red cube"], seed=3).images[0].tokens.tolist()
print(json.dumps({"cache_hits": len(hits), "tokens": tokens}))
