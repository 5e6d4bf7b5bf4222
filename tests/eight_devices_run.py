"""Every check that needs 8 devices, in one process run once a session (tests/conftest.py's `eight_devices`
fixture starts it with XLA_FLAGS=--xla_force_host_platform_device_count=8: the flag must precede jax's
start), so that jax is imported and the 8-device programs compiled once, not once a test:

- the pipeline (test_pipeline.py): the same generation on 1 device, 8 data-parallel devices, and with the
  weights split over a model axis; the tokens of each go into results.json, the pixels into pixels.npz;
- the CLI (test_cli.py): `nbkit generate` on the 8 devices, its stdout, stderr and exit code in
  results.json, its run folder under cli/;
- the upscaler (test_upscale.py): five pictures in one call, sharded over the devices, into upscaled.npy.

    python tests/eight_devices_run.py OUT DALLEBART VQGAN ESRGAN_WEIGHTS
"""

import contextlib
import io
import json
import re
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nbkit.cli import main as cli_main
from nbkit.generation import sharding
from nbkit.generation.pipeline import Pipeline
from nbkit.generation.request import ImageTask
from nbkit.generation.sampling import SamplingSettings
from nbkit.generation.upscale import Upscaler

COLLECTIVES = re.compile(r"\b(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)[-.\w]*\(")
PROMPTS = ["a red cube", "an avocado armchair", "sunset over a lake"]
# What test_cli.py's 1-device run generates too (beside --out and the tiny models).
CLI_ARGS = ["generate", "a red cube", "sunset over a lake", "-n", "3", "--seed", "17"]


def upscale_pictures() -> list[np.ndarray]:
    """test_upscale.py makes the same five pictures on one device."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(5)]


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


def pipelines(dallebart: str, vqgan: str) -> tuple[dict, dict]:
    results, pixels = {}, {}
    for name, devices, model_parallel in [("one", jax.devices()[:1], 1), ("data8", None, 1),
                                          ("model8", None, 8), ("data2_model4", None, 4)]:
        pipe = Pipeline.from_pretrained(dallebart, vqgan, dtype="float32", model_parallel=model_parallel,
                                        progress=False, devices=devices,
                                        max_batch=8 if name == "data8" else None)
        generation = pipe.generate(PROMPTS, n_images=2, seed=7)
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
    return results, pixels


def cli(out: Path, dallebart: str, vqgan: str) -> dict:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli_main([*CLI_ARGS, "--out", str(out), "--model", dallebart, "--vqgan", vqgan,
                         "--dtype", "float32"])
    return {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


if __name__ == "__main__":
    out, dallebart, vqgan, esrgan = Path(sys.argv[1]), *sys.argv[2:5]
    began = time.perf_counter()
    seconds = lambda: round(time.perf_counter() - began, 1)
    took = {}                                     # when each part ended, for the record
    results, pixels = pipelines(dallebart, vqgan)
    np.savez(out / "pixels.npz", **pixels)
    took["pipelines"] = seconds()
    results["cli"] = cli(out / "cli", dallebart, vqgan)
    took["cli"] = seconds()
    np.save(out / "upscaled.npy", np.stack(Upscaler(esrgan, dtype=jnp.float32).upscale(upscale_pictures())))
    took["upscale"] = seconds()
    (out / "results.json").write_text(json.dumps({"device_count": jax.device_count(), "seconds": took,
                                                  "platform": jax.devices()[0].platform, **results}))
