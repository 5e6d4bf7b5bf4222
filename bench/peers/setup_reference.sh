#!/usr/bin/env bash
# Make a virtual environment with the reference DALL·E mini stack, for run_reference.py.
#
#   bash bench/peers/setup_reference.sh [VENV_DIR]     # default: bench/peers/.venv-reference
#
# Why these versions: dalle-mini 0.1.5 pins jax 0.3.25 / flax 0.6.3, which have no wheels
# for Python 3.11. jax/jaxlib 0.4.13 + flax 0.6.11 + transformers 4.25.1 is the newest set
# it runs on (the project's golden fixtures were made with it). numpy < 2, scipy < 1.13
# (jax 0.4.13 wraps scipy.linalg.tril, removed in 1.13) and ml_dtypes 0.2.0 (the float8
# names jaxlib 0.4.13 uses) keep jax 0.4.13 importable.
# --no-deps for flax (its optax / orbax-checkpoint / tensorstore would pull a newer jax;
# inference imports none of them, only absl, msgpack, rich, PyYAML, typing_extensions)
# and for dalle-mini (its pins). wandb is not installed: dalle_mini imports it at the top
# but uses it only to fetch W&B artifacts; run_reference.py puts a stub module in its place.
# Running the script again only checks the environment and exits.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-$here/.venv-reference}
python=${PYTHON:-python3}

ready() {
    [ -x "$venv/bin/python" ] && "$venv/bin/python" - <<'EOF' 2>/dev/null
import sys, types
from importlib.metadata import version
want = {"jax": "0.4.13", "jaxlib": "0.4.13", "flax": "0.6.11", "transformers": "4.25.1", "dalle-mini": "0.1.5"}
if any(version(name) != v for name, v in want.items()):
    sys.exit(1)
import jax, jax.experimental, jax.sharding
jax.experimental.PartitionSpec = jax.sharding.PartitionSpec
sys.modules.setdefault("wandb", types.ModuleType("wandb"))
from dalle_mini.model import DalleBart, DalleBartConfig  # noqa: F401
EOF
}

source "$here/_venv.sh"
start_venv reference
pip_install "jax==0.4.13" "jaxlib==0.4.13" "numpy<2" "scipy<1.13" "ml_dtypes==0.2.0" \
    "transformers==4.25.1" absl-py msgpack rich typing_extensions PyYAML \
    einops unidecode ftfy emoji \
    || { echo "error: pip install of the reference's dependencies failed" >&2; exit 1; }
pip_install --no-deps "flax==0.6.11" "dalle-mini==0.1.5" \
    || { echo "error: pip install of flax 0.6.11 / dalle-mini 0.1.5 failed" >&2; exit 1; }

finish_venv reference "dalle_mini 0.1.5 with the pinned versions"
