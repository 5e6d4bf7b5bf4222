"""One process of the GPU check (bench/device_check.py starts it): nbkit with random weights, one
model and dtype, some batch sizes; one JSON line on stdout per finished row, so that a run stopped
by the time budget still hands back the rows it finished.

    python bench/device_worker.py --model mega --dtype bfloat16 --batches 1,4,9,16 --deadline EPOCH_S
    python bench/device_worker.py --model mini --dtype float32 --batches 4 --compilation-cache DIR
    python bench/device_worker.py --tiny ...          # the tiny sizes that `device_check.py --cpu` uses
    python bench/device_worker.py --bandwidth 2048    # the device's copy bandwidth, a 2 GiB array

A fresh process per model and dtype gives each its own first call (compile time) and its own peak
device memory. The peak so far (jax's `memory_stats`) cannot be reset: a row is marked as having
its own peak only when no larger batch ran before it in the process. Every row is a first call
(compiling that batch's programs) and a second, timed one, of one prompt's images at condition scale 10.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import jax
import jax.numpy as jnp

from nbkit.generation.batches import padded_size
from nbkit.generation.device import use_compilation_cache
from nbkit.generation.events import Done
from nbkit.generation.pipeline import Pipeline
from nbkit.generation.request import GenerationRequest
from nbkit.generation.sampling import SamplingSettings
from nbkit.generation.sharding import data_size, make_mesh, put_tree, weight_placer
from nbkit.models import vqgan as vqgan_module
from nbkit.models.dallebart import PUBLISHED_ARCHITECTURES, DalleBart, DalleBartConfig
from nbkit.text.tokenizer import PromptTokenizer
from nbkit.weights.loaders import load_dallebart, load_vqgan, random_params

GOLDEN = Path(__file__).parent.parent / "tests" / "fixtures" / "golden"
TOKENIZER = GOLDEN / "dallebart-tiny"        # BART BPE with ids < 600: valid for every vocabulary here
PROMPT = "an armchair in the shape of an avocado"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def nbytes(tree) -> int:
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def bytes_read_per_step(params: dict, config: DalleBartConfig, rows: int, itemsize: int) -> dict[str, int]:
    """What one decoder step must read from memory, at least: every decoder weight but the embedding
    tables (a step reads one row of each) and the cross-attention key/value projections (applied once,
    at the start), plus the lm_head; and the caches: the self-attention keys/values of all image
    positions (static shapes: the whole cache) and the cross-attention keys/values of the text."""
    weights = nbytes(params["lm_head"])
    for path, leaf in jax.tree_util.tree_flatten_with_path(params["decoder"])[0]:
        name = jax.tree_util.keystr(path)
        if "embed_" not in name and not ("FlaxBartAttention_1" in name and "kv_proj" in name):
            weights += leaf.size * leaf.dtype.itemsize
    per_row = 2 * config.decoder_layers * config.d_model * itemsize
    cache = rows * per_row * (config.image_length + config.max_text_length)
    return {"weights": weights, "cache": cache}


def build(model_name: str, dtype, tiny: bool, max_batch: int) -> Pipeline:
    """A Pipeline of the architecture with random weights, placed as real ones would be. --tiny: the
    tiny golden fixtures, read by the real loaders, for either name (compiling random weights' jitted
    initializer takes longer on a CPU than a tiny model's whole run)."""
    mesh = make_mesh()
    if tiny:
        model, params = load_dallebart(TOKENIZER, dtype, place=weight_placer(mesh))
        decoder, decoder_params = load_vqgan(GOLDEN / "vqgan-tiny", dtype)
        decoder_params = put_tree(decoder_params, mesh)
    else:
        model = DalleBart(PUBLISHED_ARCHITECTURES[model_name], dtype)
        params = jax.tree.map(lambda leaf: weight_placer(mesh)(None, leaf),
                              jax.jit(lambda: random_params(model))())
        decoder = vqgan_module.VQGANDecoder(vqgan_module.PUBLISHED_ARCHITECTURE, dtype)
        decoder_params = put_tree(jax.jit(lambda: random_params(decoder))(), mesh)
    config = model.config
    jax.block_until_ready((params, decoder_params))
    tokenizer = PromptTokenizer.from_folder(TOKENIZER, max_length=config.max_text_length)
    return Pipeline(model, params, tokenizer, decoder, decoder_params, mesh, max_batch,
                    name=f"{model_name} (random)")


def peak_memory_bytes() -> tuple[int, str]:
    """The device's peak bytes in use so far; where the runtime keeps none (CPU), the process's peak
    resident memory."""
    device = jax.devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # some backends raise rather than return None
        stats = {}
    if stats.get("peak_bytes_in_use"):
        return int(stats["peak_bytes_in_use"]), "device"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host RSS"


class CompileLog:
    """Seconds jax spent tracing, lowering and compiling (its monitoring events), and cache hits."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.events: dict[str, int] = defaultdict(int)
        jax.monitoring.register_event_duration_secs_listener(self._duration)
        jax.monitoring.register_event_listener(self._event)

    def _duration(self, name: str, seconds: float, **_: object) -> None:
        self.seconds[name] += seconds

    def _event(self, name: str, **_: object) -> None:
        self.events[name] += 1

    def snapshot(self) -> dict:
        short = lambda name: name.rsplit("/", 1)[-1]
        return {"seconds": {short(k): round(v, 3) for k, v in self.seconds.items()},
                "events": {short(k): v for k, v in self.events.items()}}


def timings(pipe: Pipeline, images: int, seed: int) -> dict:
    request = GenerationRequest([PROMPT], images, seed, SamplingSettings(condition_scale=10.0))
    return next(event for event in pipe.stream(request) if isinstance(event, Done)).timings


def sized(pipe: Pipeline, images: int) -> Pipeline:
    """`pipe`'s weights in a Pipeline whose one batch shape holds `images` (every batch is padded to
    max_batch rows, so a row of the table is a pipeline of that max_batch)."""
    return Pipeline(pipe.model, pipe.params, pipe.tokenizer, pipe.vqgan, pipe.vqgan_params, pipe.mesh,
                    padded_size(images, data_size(pipe.mesh)), name=pipe.name)


def row(pipe: Pipeline, images: int, log: CompileLog, built_s: float) -> dict:
    pipe = sized(pipe, images)
    before = log.snapshot()
    started = time.perf_counter()
    first = timings(pipe, images, 0)
    first_wall = time.perf_counter() - started
    steady = timings(pipe, images, 1)
    config, itemsize = pipe.model.config, jnp.dtype(pipe.model.dtype).itemsize
    rows = 2 * pipe.max_batch                                   # super-conditioned: two rows an image
    peak, peak_kind = peak_memory_bytes()
    after = log.snapshot()
    compile_s = {k: round(v - before["seconds"].get(k, 0.0), 3) for k, v in after["seconds"].items()}
    return {"images": images, "bucket": rows // 2, "tokens_s": steady["tokens"], "pixels_s": steady["pixels"],
            "first_tokens_s": first["tokens"], "first_pixels_s": first["pixels"], "first_call_s": first_wall,
            "compile_s": max(first_wall - steady["total"], 0.0), "build_s": built_s,
            "tokens_per_s": images * config.image_length / steady["tokens"],
            "peak_bytes": peak, "peak_kind": peak_kind,
            "bytes_per_step": bytes_read_per_step(pipe.params, config, rows, itemsize),
            "steps": config.image_length, "jax_compile_s": compile_s,
            "cache_hits": after["events"].get("cache_hits", 0) - before["events"].get("cache_hits", 0)}


def copy_bandwidth(megabytes: int, repeats: int = 10) -> dict:
    """Bytes/s that the device streams: a float32 array of `megabytes` read and written once (x + 1),
    counting both; the median of `repeats` runs after a warm-up."""
    array = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
    step = jax.jit(lambda x: x + 1)
    step(array).block_until_ready()
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        step(array).block_until_ready()
        seconds.append(time.perf_counter() - began)
    median = sorted(seconds)[len(seconds) // 2]
    return {"bandwidth": 2 * array.nbytes / median, "bytes": array.nbytes, "median_s": median,
            "device": jax.devices()[0].device_kind, "backend": jax.default_backend(), "jax": jax.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bandwidth", type=int, metavar="MB", help="only measure the copy bandwidth")
    parser.add_argument("--model", choices=["mini", "mega"], default="mini")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--batches", default="1,4,9,16", help="images per call, comma-separated")
    parser.add_argument("--deadline", type=float, default=float("inf"), help="epoch seconds: start no row "
                        "that the last one's time says would end later")
    parser.add_argument("--compilation-cache", type=Path, help="a persistent compilation cache folder")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU check)")
    args = parser.parse_args()
    if args.bandwidth:
        print(json.dumps({"bandwidth": copy_bandwidth(args.bandwidth)}), flush=True)
        return
    batches = [int(b) for b in args.batches.split(",")]
    if args.compilation_cache:
        use_compilation_cache(args.compilation_cache)
    log = CompileLog()
    started = time.perf_counter()
    pipe = build(args.model, DTYPES[args.dtype], args.tiny, max_batch=max(16, *batches))
    built_s = time.perf_counter() - started
    header = {"model": "tiny fixture" if args.tiny else args.model, "dtype": args.dtype,
              "device": jax.devices()[0].device_kind,
              "backend": jax.default_backend(), "jax": jax.__version__, "weights_bytes": nbytes(pipe.params),
              "build_s": built_s}
    print(json.dumps({"header": header}), flush=True)
    last_s, largest = 0.0, 0
    for images in batches:
        if time.time() + 1.5 * last_s > args.deadline:
            print(json.dumps({"skipped": images, "why": "time budget"}), flush=True)
            continue
        began = time.perf_counter()
        result = row(pipe, images, log, built_s)
        result["peak_is_own"] = result["bucket"] >= largest     # no larger batch ran before it
        largest = max(largest, result["bucket"])
        print(json.dumps({"row": result}), flush=True)
        last_s = time.perf_counter() - began
    print(json.dumps({"done": log.snapshot()}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
