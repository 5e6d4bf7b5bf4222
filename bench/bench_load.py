"""Peak host memory and time for loading a large checkpoint, relative to its file size.

Writes a synthetic ~2 GB checkpoint in DALL·E Mega's published layout (mega-1-fp16:
layers stacked, float16, input-major kernels, separate q/k/v projections; Mega's widths
with 8 + 8 layers instead of 24 + 24), then loads it as bfloat16 in a fresh process with
`nbkit.weights.loaders.load_dallebart`, and for comparison with a plain
`flax.serialization.msgpack_restore` followed by a cast.

    python bench/bench_load.py [--folder /tmp/nbkit-bench-load] [--layers 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

MEASURE = r"""
import json, resource, sys, time
from pathlib import Path

def rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

import jax, jax.numpy as jnp, numpy as np
from flax import serialization
from nbkit.weights.loaders import load_dallebart
jnp.zeros(1).block_until_ready()
folder, how = Path(sys.argv[1]), sys.argv[2]
baseline = rss_mib()
start = time.perf_counter()
if how == "nbkit":
    _, params = load_dallebart(folder, jnp.bfloat16)
else:
    tree = serialization.msgpack_restore((folder / "flax_model.msgpack").read_bytes())
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.bfloat16), tree)
jax.block_until_ready(params)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
loaded = sum(a.nbytes for a in jax.tree_util.tree_leaves(params)) / 2**20
print(json.dumps({"seconds": seconds, "peak_mib": peak - baseline, "loaded_mib": loaded}))
"""


def write_checkpoint(folder: Path, layers: int) -> int:
    """A random checkpoint in mega-1-fp16's layout; returns its size in bytes."""
    import jax
    import numpy as np
    from flax import serialization
    from flax.traverse_util import flatten_dict, unflatten_dict

    from nbkit.models.dallebart import PUBLISHED_ARCHITECTURES, DalleBart, param_shapes
    from nbkit.weights.loaders import FUSED_FROM

    config = dataclasses.replace(PUBLISHED_ARCHITECTURES["mega"], encoder_layers=layers,
                                 decoder_layers=layers)
    rng = np.random.default_rng(0)
    stored = {}
    for key, spec in flatten_dict(param_shapes(DalleBart(config))).items():
        shape = spec.shape
        names = FUSED_FROM.get(key[-2], (key[-2],)) if len(key) > 1 else (key[-1],)
        for name in names:
            part_shape = (shape[0] // len(names),) + shape[1:] if len(names) > 1 else shape
            if key[-1] == "kernel":
                part_shape = part_shape[::-1]  # stored input-major
            stored_key = key[:-2] + (name, key[-1]) if len(names) > 1 else key
            stored[stored_key] = (0.02 * rng.standard_normal(part_shape, np.float32)).astype(np.float16)
    tree = {}
    for key, value in stored.items():  # per-layer names → stacked, under "model"
        if key[0] in ("encoder", "decoder"):
            layer = int(key[1].split("_")[1]) if key[1].startswith("layers_") else None
            if layer is not None:
                wrapper = "FlaxBartEncoderLayers" if key[0] == "encoder" else "FlaxBartDecoderLayers"
                tree.setdefault(("model", key[0], "layers", wrapper) + key[2:], {})[layer] = value
                continue
            tree[("model",) + key] = value
        else:
            tree[key] = value
    tree = {k: (np.stack([v[i] for i in range(layers)]) if isinstance(v, dict) else v)
            for k, v in tree.items()}
    folder.mkdir(parents=True, exist_ok=True)
    data = serialization.msgpack_serialize(unflatten_dict(tree))
    (folder / "flax_model.msgpack").write_bytes(data)
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    (folder / "config.json").write_text(json.dumps(fields))
    del jax
    return len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/nbkit-bench-load"))
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    writer = subprocess.run([sys.executable, "-c",
                             f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                             f"from bench_load import write_checkpoint; from pathlib import Path; "
                             f"print(write_checkpoint(Path({str(args.folder)!r}), {args.layers}))"],
                            check=True, capture_output=True, text=True)
    size_mib = int(writer.stdout.split()[-1]) / 2**20
    print(f"checkpoint: {size_mib:.0f} MiB (float16, stacked layers), loaded as bfloat16")
    print(f"{'loader':<22} {'seconds':>8} {'peak host MiB':>14} {'peak / file':>12}")
    for how, label in (("nbkit", "nbkit load_dallebart"), ("restore", "msgpack_restore+cast")):
        run = subprocess.run([sys.executable, "-c", MEASURE, str(args.folder), how],
                             check=True, capture_output=True, text=True)
        result = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{label:<22} {result['seconds']:>8.1f} {result['peak_mib']:>14.0f} "
              f"{result['peak_mib'] / size_mib:>11.2f}×", flush=True)


if __name__ == "__main__":
    main()
