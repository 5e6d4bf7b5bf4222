"""Upscaling speed and memory: nbkit's Real-ESRGAN in JAX against the same architectures on CPU torch.

Random weights of the released files' real sizes (x4plus, x4plus-anime-6b, x2plus, general-x4v3).
Each measurement runs in its own process, so that its peak memory (max RSS) is its own: nbkit's
jitted network, and the reference architectures in PyTorch (bench/peers/esrgan_torch.py, in the
benchmark-only venv that bench/peers/setup_esrgan_torch.sh makes; skipped when it is absent).
Prints seconds per image (best of --repeats after a first, compiling call) and peak MB.

    bash bench/peers/setup_esrgan_torch.sh
    python bench/bench_upscale.py                       # 256 → 1024 px, batches 1 and 4
    python bench/bench_upscale.py --size 64 --models x4plus general-x4v3 --batches 1
    python bench/bench_upscale.py --seams               # tiled vs untiled, per architecture

--seams upscales a 64×512 picture untiled and in --seam-tile windows with each of --overlaps, and
prints how far the tiled result strays (float and uint8 levels), for each architecture.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TORCH_PYTHON = HERE / "peers" / ".venv-esrgan-torch" / "bin" / "python"
MODELS = ("x4plus", "x4plus-anime-6b", "x2plus", "general-x4v3")


def _random_model(name: str, dtype):
    from nbkit.models import esrgan
    from nbkit.weights.checkpoint import random_weights

    model = esrgan.build(esrgan.PUBLISHED_ARCHITECTURES[name], dtype)
    return model, random_weights(esrgan.param_shapes(model), dtype)


def worker(args: argparse.Namespace) -> None:
    """One measurement of nbkit's network, in this process: prints one JSON line."""
    import jax
    import numpy as np
    from _common import compute_dtype

    model, params = _random_model(args.model, compute_dtype(args))
    apply = jax.jit(model.apply)
    pixels = np.random.default_rng(0).random((args.batch, args.size, args.size, 3), np.float32)
    times = []
    for _ in range(1 + args.repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(apply({"params": params}, pixels))
        times.append(time.perf_counter() - start)
    print(json.dumps({"implementation": f"nbkit (jax {jax.__version__})", "first_s": times[0],
                      "best_s": min(times[1:]), "output": list(out.shape)}))


def _measure(command: list[str]) -> tuple[dict, float]:
    """Runs one measurement process; (its JSON line, its peak RSS in MB)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=HERE)
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"measurement failed ({process.returncode}): {' '.join(command)}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def seams(args: argparse.Namespace) -> None:
    import jax.numpy as jnp
    import numpy as np

    from nbkit.generation.upscale import TileSettings, Upscaler

    rng = np.random.default_rng(0)
    rows, columns = np.mgrid[0:64, 0:512]
    picture = np.stack([columns * 0.7, rows * 1.3, (rows + columns) * 0.5], -1) % 256
    picture = np.clip(picture + rng.normal(0, 12, picture.shape), 0, 255).astype(np.float32) / 255
    print(f"{'model':<16} {'overlap':>7} {'max |diff|':>10} {'mean |diff|':>11} {'max levels':>10} "
          f"{'pixels off':>10}")
    for name in args.models:
        model, params = _random_model(name, jnp.float32)
        results = {}
        for tile, overlap in ((512, 0),) + tuple((args.seam_tile, o) for o in args.overlaps):
            upscaler = Upscaler.from_params(model, params, name, settings=TileSettings(tile, overlap))
            results[overlap] = upscaler.upscale_float([picture])[0]
            if tile == 512:
                continue
            difference = np.abs(results[overlap] - results[0])
            levels = np.abs(np.round(np.clip(results[overlap], 0, 1) * 255)
                            - np.round(np.clip(results[0], 0, 1) * 255))
            print(f"{name:<16} {overlap:>7} {difference.max():>10.2e} {difference.mean():>11.2e} "
                  f"{levels.max():>10.0f} {(levels > 0).mean():>10.2%}", flush=True)


def main() -> None:
    from _common import add_dtype_option

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--size", type=int, default=256, help="input side in pixels (default 256)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--torch-python", default=str(TORCH_PYTHON))
    parser.add_argument("--seams", action="store_true", help="measure tiled vs untiled instead")
    parser.add_argument("--overlaps", nargs="+", type=int, default=[16, 32, 48])
    parser.add_argument("--seam-tile", type=int, default=128, help="window side for --seams")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    add_dtype_option(parser)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.seams:
        return seams(args)
    import jax

    have_torch = Path(args.torch_python).is_file()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {os.cpu_count()} cores, "
          f"{args.size} → upscaled, random weights of the real sizes")
    if not have_torch:
        print(f"(no torch reference: {args.torch_python} is missing; bash bench/peers/setup_esrgan_torch.sh)")
    print(f"{'model':<16} {'batch':>5} {'nbkit s/img':>11} {'torch s/img':>11} {'torch÷nbkit':>11} "
          f"{'nbkit MB':>8} {'torch MB':>8}")
    for name in args.models:
        for batch in args.batches:
            common = ["--model", name, "--batch", str(batch), "--size", str(args.size),
                      "--repeats", str(args.repeats)]
            env_dtype = ["--dtype", args.dtype] if args.dtype else []
            ours, our_mb = _measure([sys.executable, __file__, "--worker", *common, *env_dtype])
            ours_s = ours["best_s"] / batch
            if have_torch:
                peer = [args.torch_python, str(HERE / "peers" / "esrgan_torch.py"), *common]
                theirs, their_mb = _measure(peer)
                theirs_s = theirs["best_s"] / batch
                print(f"{name:<16} {batch:>5} {ours_s:>11.2f} {theirs_s:>11.2f} {theirs_s / ours_s:>10.2f}x "
                      f"{our_mb:>8.0f} {their_mb:>8.0f}", flush=True)
            else:
                print(f"{name:<16} {batch:>5} {ours_s:>11.2f} {'-':>11} {'-':>11} {our_mb:>8.0f} {'-':>8}",
                      flush=True)


if __name__ == "__main__":
    main()
