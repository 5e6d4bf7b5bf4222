#!/usr/bin/env bash
# Make a virtual environment with CPU torch, for bench/bench_upscale.py's reference run of
# Real-ESRGAN's architectures (bench/peers/esrgan_torch.py). Benchmark-only: nbkit never needs torch.
#
#   bash bench/peers/setup_esrgan_torch.sh [VENV_DIR]   # default: bench/peers/.venv-esrgan-torch
#
# torch's CPU build (the "+cpu" wheel, no CUDA libraries) keeps the venv near 1 GB; any torch ≥ 2.0
# runs the reference. Running the script again only checks the environment and exits.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-$here/.venv-esrgan-torch}
python=${PYTHON:-python3}
torch_spec=${TORCH_SPEC:-torch==2.13.0+cpu}

ready() {
    [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import torch, numpy" 2>/dev/null
}

source "$here/_venv.sh"
start_venv esrgan-torch
pip_install "$torch_spec" numpy \
    || pip_install --index-url https://download.pytorch.org/whl/cpu torch numpy \
    || { echo "error: pip install of CPU torch failed" >&2; exit 1; }
finish_venv esrgan-torch "torch"
