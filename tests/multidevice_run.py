"""Run in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8 (see
test_pipeline.py): the same generation on 1 device, 8 data-parallel devices, and with the
weights split over a model axis; prints the tokens of each as JSON and saves the pixels of each in the
.npz file named by the third argument."""

import json
import re
import sys

import jax
import numpy as np

from nbkit.generation import sharding
from nbkit.generation.pipeline import Pipeline
from nbkit.generation.request import ImageTask
from nbkit.generation.sampling import SamplingSettings

COLLECTIVES = re.compile(r"\b(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)[-.\w]*\(")


def step_collectives(pipe):
    """The cross-device operations in one compiled sampling step (`advance` over one token)."""
    settings = SamplingSettings()
    sampler = pipe.sampler(settings)
    traced = jax.tree.map(lambda v: sharding.put(v, sharding.replicated(pipe.mesh)),
                          settings.as_arrays(pipe.model.config))
    rows = pipe.max_batch
    state, _ = pipe._start(sampler, [ImageTask("a", 0, row) for row in range(rows)], traced)
    text = sampler.advance.lower(pipe.params, state, traced, 1, 2).compile().as_text()
    return sorted({match.group(1) for match in COLLECTIVES.finditer(text)})

dallebart, vqgan, pixels_file = sys.argv[1:4]
prompts, results, pixels = ["a red cube", "an avocado armchair", "sunset over a lake"], {}, {}
for name, devices, model_parallel in [("one", jax.devices()[:1], 1), ("data8", None, 1),
                                      ("model8", None, 8), ("data2_model4", None, 4)]:
    pipe = Pipeline.from_pretrained(dallebart, vqgan, dtype="float32", model_parallel=model_parallel,
                                    progress=False, devices=devices, max_batch=8 if name == "data8" else None)
    generation = pipe.generate(prompts, n_images=2, seed=7)
    results[name] = {"devices": pipe.mesh.devices.size,
                     "batch_sizes": sorted({image.batch_size for image in generation.images}),
                     "tokens": [image.tokens.tolist() for image in generation.images]}
    pixels[name] = np.stack([image.pixels for image in generation.images])
    if name == "data8":
        results[name]["step_collectives"] = step_collectives(pipe)
    if name == "model8":
        kernel = pipe.params["decoder"]["layers_0"]["GLU_0"]["Dense_2"]["kernel"]
        results[name]["kernel_shard_rows"] = sorted({shard.data.shape[0]
                                                     for shard in kernel.addressable_shards})
        results[name]["kernel_rows"] = kernel.shape[0]
np.savez(pixels_file, **pixels)
print(json.dumps({"device_count": jax.device_count(), **results}))
