#!/usr/bin/env bash
# Make a virtual environment with min-dalle on CPU torch, for run_min_dalle.py.
#
#   bash bench/peers/setup_min_dalle.sh [VENV_DIR]     # default: bench/peers/.venv-min-dalle
#
# torch is pinned to 2.13.0: this machine's pip finds a CPU-only wheel of it on local disk
# (/opt/wheels). A plain `torch` or a looser range would fetch the CUDA build and GBs of
# nvidia-* packages. min-dalle 0.4.11 (the latest) needs torch>=1.11, which the pin meets,
# so it is installed in the same command (the pin stops pip from choosing another torch);
# its other needs are light (numpy, pillow, requests, emoji, typing_extensions).
# Running the script again only checks the environment and exits.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-$here/.venv-min-dalle}
python=${PYTHON:-python3}

ready() {
    [ -x "$venv/bin/python" ] && "$venv/bin/python" - <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
if version("torch").split("+")[0] != "2.13.0" or version("min-dalle") != "0.4.11":
    sys.exit(1)
from min_dalle.models import DalleBartDecoder, DalleBartEncoder  # noqa: F401
EOF
}

source "$here/_venv.sh"
start_venv min-dalle
pip_install "torch==2.13.0" "min-dalle==0.4.11" \
    || { echo "error: pip install of torch 2.13.0 (CPU) / min-dalle 0.4.11 failed" >&2; exit 1; }

finish_venv min-dalle "min_dalle 0.4.11 on torch 2.13.0"
