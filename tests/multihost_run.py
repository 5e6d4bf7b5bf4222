"""One of two processes generating together on CPU (see test_pipeline.py): the same code as on
one host, after `jax.distributed.initialize()`. Process 0 prints the tokens as JSON."""

import json
import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")   # CPU collectives between processes
process, port, dallebart, vqgan = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process)

from nbkit.generation.pipeline import Pipeline  # noqa: E402

pipe = Pipeline.from_pretrained(dallebart, vqgan, dtype="float32", progress=False)
generation = pipe.generate(["a red cube", "an avocado armchair", "sunset over a lake"], n_images=2, seed=7)
unseeded = pipe.generate(["a red cube"])
if process == 0:
    print(json.dumps({"processes": jax.process_count(), "devices": jax.device_count(),
                      "tokens": [image.tokens.tolist() for image in generation.images],
                      "unseeded_seed": unseeded.seed}))
else:
    print(json.dumps({"unseeded_seed": unseeded.seed}))
