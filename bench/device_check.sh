#!/usr/bin/env bash
# The GPU check (bench/device_check.py says what it measures), on a machine without network:
#
#   bash bench/device_check.sh [--budget SECONDS] [--out DIR]     # on the lent GPU
#   bash bench/device_check.sh --cpu                              # tiny sizes, here
#
# First installs the carried wheels of what the interpreter lacks (bench/wheels, made here by
# bench/fetch_device_wheels.sh) into a folder of their own, never over the image's jax, flax, numpy
# or torch, and checks that every dependency in pyproject.toml is there. docs/speed.md ("GPU check")
# gives the device run's command and carry list.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
python=${PYTHON:-python3}
site=${NBKIT_DEVICE_SITE:-${TMPDIR:-/tmp}/nbkit-device-site}
# Each part is a process of its own: none may take most of the GPU's memory for itself at start.
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
unset JAX_COMPILATION_CACHE_DIR   # compile times are first calls' unless a part sets its own cache
"$python" bench/carried_wheels.py bench/wheels "$site"
export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" bench/device_check.py "$@"
