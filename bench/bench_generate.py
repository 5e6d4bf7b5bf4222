"""Side by side, in one run: nbkit, the reference `dalle-mini` 0.1.5 and `min-dalle`.

The same work for each: the real DALL·E mini architecture with random weights (nothing can
be downloaded here), 4 images of one prompt, condition scale 10, float32, prompt → image
tokens (the VQGAN decode is timed separately for nbkit). The peers run in their own virtual
environments, built by `bench/peers/setup_reference.sh` and `bench/peers/setup_min_dalle.sh`.
Prints a table of seconds and ratios and writes bench/RESULTS.md.

    python bench/bench_generate.py --repeats 2
    python bench/bench_generate.py --mega-grid      # on a GPU/TPU: 3×3 Mega grid in bfloat16

Also shows what progressive output costs: the same generation streamed with a `Progress` event
every 32 tokens (read as a progress bar reads it, without decoding the partial images), and
without one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp

from nbkit.generation.events import Done
from nbkit.generation.pipeline import Pipeline
from nbkit.generation.request import GenerationRequest
from nbkit.generation.sampling import SamplingSettings
from nbkit.generation.sharding import make_mesh, put_tree, weight_placer
from nbkit.models import vqgan as vqgan_module
from nbkit.models.dallebart import PUBLISHED_ARCHITECTURES, DalleBart
from nbkit.text.tokenizer import PromptTokenizer
from nbkit.weights.loaders import random_params

HERE = Path(__file__).parent
TOKENIZER = HERE.parent / "tests" / "fixtures" / "golden" / "dallebart-tiny"   # BART BPE, ids < 600
PROMPT = "an armchair in the shape of an avocado"
PEERS = {"reference dalle-mini 0.1.5": ("run_reference.py", ".venv-reference", "setup_reference.sh"),
         "min-dalle": ("run_min_dalle.py", ".venv-min-dalle", "setup_min_dalle.sh")}
# Peak memory bandwidth, bytes/s, by device kind (vendor data sheets).
BANDWIDTH = {"H100 80GB HBM3": 3.35e12, "H100 PCIe": 2.0e12, "H200": 4.8e12, "A100-SXM4-80GB": 2.04e12,
             "A100-SXM4-40GB": 1.56e12, "L4": 0.3e12, "T4": 0.32e12, "V100": 0.9e12}


def random_pipeline(architecture: str, dtype, max_batch: int | None = None) -> Pipeline:
    """A Pipeline of the published architecture with random weights, placed as real ones would be."""
    config = PUBLISHED_ARCHITECTURES[architecture]
    mesh = make_mesh()
    model = DalleBart(config, dtype)
    params = jax.tree.map(lambda leaf: weight_placer(mesh)(None, leaf),
                          jax.jit(lambda: random_params(model))())
    decoder = vqgan_module.VQGANDecoder(vqgan_module.PUBLISHED_ARCHITECTURE, dtype)
    decoder_params = put_tree(jax.jit(lambda: random_params(decoder))(), mesh)
    tokenizer = PromptTokenizer.from_folder(TOKENIZER, max_length=config.max_text_length)
    return Pipeline(model, params, tokenizer, decoder, decoder_params, mesh, max_batch,
                    name=f"{architecture} (random)")


def _timings(pipe: Pipeline, images: int, seed: int, progress_every: int | None) -> dict:
    request = GenerationRequest([PROMPT], images, seed, SamplingSettings(condition_scale=10.0))
    return next(e for e in pipe.stream(request, progress_every) if isinstance(e, Done)).timings


def time_nbkit(pipe: Pipeline, images: int, repeats: int, progress_every: int | None = None) -> dict:
    first = _timings(pipe, images, 0, progress_every)
    runs = [_timings(pipe, images, 1 + r, progress_every) for r in range(repeats)]
    return {"first_s": first["tokens"], "runs_s": [r["tokens"] for r in runs],
            "best_s": min(r["tokens"] for r in runs), "pixels_s": min(r["pixels"] for r in runs),
            "total_s": min(r["total"] for r in runs)}


def time_peer(script: str, venv: str, setup: str, repeats: int) -> dict | str:
    python = HERE / "peers" / venv / "bin" / "python"
    if not python.exists():
        return f"not set up: run `bash bench/peers/{setup}`"
    out = subprocess.run([str(python), str(HERE / "peers" / script), "--repeats", str(repeats)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return "failed: " + (out.stderr.strip().splitlines() or ["?"])[-1][:200]
    return json.loads(out.stdout.strip().splitlines()[-1])


def mega_grid(repeats: int) -> str:
    """3×3 Mega grid in bfloat16, and the fraction of the memory-bandwidth bound it reaches."""
    pipe = random_pipeline("mega", jnp.bfloat16, max_batch=16)
    result = time_nbkit(pipe, 9, repeats)
    decoder_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(pipe.params["decoder"]))
    kind = jax.devices()[0].device_kind
    bandwidth = next((value for name, value in BANDWIDTH.items() if name in kind), None)
    line = (f"Mega 3×3 grid, bfloat16, {kind}: {result['best_s']:.2f} s for the tokens "
            f"(+{result['pixels_s']:.2f} s VQGAN), first call {result['first_s']:.1f} s; "
            f"decoder weights {decoder_bytes / 1e9:.2f} GB")
    if bandwidth:
        bound = decoder_bytes * 256 / bandwidth
        line += f"; bandwidth bound {bound:.2f} s → {bound / result['best_s']:.0%} of it"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--mega-grid", action="store_true", help="also time a 3×3 Mega grid (accelerators)")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()

    device = f"{jax.devices()[0].device_kind} ({jax.default_backend()}, {jax.device_count()} device(s))"
    print(f"device: {device}, jax {jax.__version__}; mini architecture, random weights, float32, "
          f"{args.images} images, condition scale 10; seconds for prompt → image tokens")
    pipe = random_pipeline("mini", jnp.float32)
    rows = {"nbkit": time_nbkit(pipe, args.images, args.repeats)}
    watched = time_nbkit(pipe, args.images, args.repeats, progress_every=32)
    for name, (script, venv, setup) in PEERS.items():
        print(f"timing {name} ...", flush=True)
        rows[name] = time_peer(script, venv, setup, args.repeats)

    ours = rows["nbkit"]["best_s"]
    table = ["| implementation | first call s | best s | time ÷ nbkit |", "|---|---:|---:|---:|"]
    for name, row in rows.items():
        if isinstance(row, str):
            table.append(f"| {name} | – | – | {row} |")
        else:
            table.append(f"| {name} | {row['first_s']:.1f} | {row['best_s']:.1f} | "
                         f"{row['best_s'] / ours:.2f}× |")
    notes = [
        f"- nbkit VQGAN decode of the {args.images} images: {rows['nbkit']['pixels_s']:.1f} s "
        f"(not in the table).",
        f"- Progressive output: streamed with a `Progress` event every 32 tokens (read only for its "
        f"counts, as a progress bar does) the tokens took {watched['best_s']:.1f} s, without events "
        f"{ours:.1f} s (then each batch is one compiled call). Reading `Progress.images` costs a VQGAN "
        f"decode each time.",
    ]
    if args.mega_grid:
        notes.append("- " + mega_grid(args.repeats))
    report = "\n".join([
        "# Benchmark: prompt → image tokens, side by side", "",
        f"Measured {datetime.date.today()} on {device}, {platform.processor() or platform.machine()}, "
        f"jax {jax.__version__}, with `python bench/bench_generate.py --repeats {args.repeats}`"
        + (" --mega-grid" if args.mega_grid else "") + ".",
        f"Work: DALL·E mini architecture, random weights, float32, {args.images} images of one prompt, "
        "condition scale 10. Best of the timed runs after a first (compiling) call.", "",
        *table, "", *notes, ""])
    print(report)
    args.results.write_text(report)


if __name__ == "__main__":
    main()
