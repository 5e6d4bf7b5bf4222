"""Time min-dalle from prompt tokens to image tokens (DALL·E mini sizes, random weights, CPU torch).

Run with the min-dalle venv's python (bench/peers/setup_min_dalle.sh makes it):

    bench/peers/.venv-min-dalle/bin/python bench/peers/run_min_dalle.py --repeats 2

min-dalle's own `MinDalle(is_mega=False)` sets the DALL·E mini widths (12 layers, 16 heads,
d_model 1024, GLU 2730, 50264 text / 16384 image tokens); a subclass replaces only the
loading steps, which download files, with its encoder and decoder classes built with
random float32 weights, a fixed 10-token prompt instead of the tokenizer, and no VQGAN
detokenizer (the stream's last step returns the tokens instead of decoding them).
The timed work is min-dalle's own `generate_raw_image_stream`: encoder, then 256 decoder
steps for a 2×2 grid (4 images), supercondition_factor 10, top_k 50, temperature 1.
Prints one JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np
from _peer_common import (
    CONDITION_SCALE,
    TOP_K,
    forbid_network,
    log,
    parse_args,
    report,
    time_runs,
    versions,
)

# min-dalle's modules with random weights, defined once (exits naming what is missing without min-dalle)
from min_dalle_device import RandomMinDalle, torch

# min-dalle wraps its steps in torch.cuda.amp.autocast, which on CPU warns (deprecated,
# no CUDA) and does nothing: float32 throughout.
warnings.filterwarnings("ignore", message=".*autocast.*")

THREADS = len(os.sched_getaffinity(0))  # this machine's cores: no oversubscription


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    forbid_network()
    torch.set_num_threads(THREADS)  # importing min_dalle set os.cpu_count(); the same here, but explicit
    torch.manual_seed(0)
    log(f"torch {torch.__version__}, {THREADS} threads; building DALL·E mini with random weights")
    with tempfile.TemporaryDirectory() as root:  # MinDalle makes its model folders; nothing is put there
        model = RandomMinDalle(models_root=root, dtype=torch.float32, device="cpu", is_mega=False,
                                is_reusable=True, is_verbose=False)

    def run(seed: int) -> np.ndarray:
        stream = model.generate_raw_image_stream(
            text="(fixed tokens)", seed=seed + 1,  # min-dalle seeds torch only when seed > 0
            grid_size=2, progressive_outputs=False, temperature=1, top_k=TOP_K,
            supercondition_factor=int(CONDITION_SCALE))
        return next(stream).numpy()  # (4, 256): the stream's one item, after its 256th step

    first_s, runs_s = time_runs(run, args.repeats)
    report("min-dalle", first_s, runs_s, versions("min-dalle", "torch", "numpy"))


if __name__ == "__main__":
    main()
