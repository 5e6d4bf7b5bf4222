#!/usr/bin/env bash
# Download, here, the wheels that the lent GPU machine lacks, into bench/wheels/ (git-ignored), so that
# bench/device_check.sh can install them there, where there is no network.
#
#   bash bench/fetch_device_wheels.sh        # then name bench/wheels in the device run's carry list
#
# The GPU image (Python 3.12, jax 0.11.2 on CUDA 13, flax, torch, numpy, pillow, tokenizers,
# huggingface_hub, safetensors, sentencepiece, tqdm, prometheus_client, anyio, click, h11, ...) already
# holds most of what nbkit needs; what it lacks is fetched with its dependencies, for cp312 manylinux
# x86_64, and then the wheels of packages the image has are dropped again (device_check.sh would skip
# them anyway: it installs only what is missing there or older than pyproject.toml asks). min-dalle
# 0.4.11 is published as a source archive only: it is built into a wheel here, without its
# dependencies (torch, numpy, pillow, requests, emoji: the image has them, emoji travels).
# Running it again starts the folder afresh (one version of each package: two would stop the install).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
wheels=$repo/bench/wheels
python=${PYTHON:-python3}
# What nbkit needs that the image does not hold (pyproject.toml's dependencies less the image's), and
# tqdm / prometheus_client, small, in case the image's are older than pyproject.toml's bounds.
missing=(ftfy emoji unidecode ipywidgets starlette uvicorn tqdm prometheus_client)
# Distributions the image holds (its package list, read 2026-11-17): their wheels are not carried.
image_has=(absl_py anyio attrs certifi charset_normalizer click filelock fsspec h11 hf_xet httpcore httpx
           huggingface_hub idna jinja2 markupsafe numpy packaging pillow pip psutil pygments pyyaml regex
           requests safetensors sentencepiece setuptools six tokenizers typing_extensions urllib3 wheel)

rm -rf "$wheels"
mkdir -p "$wheels"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
           manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
"$python" -m pip download -q --only-binary :all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$wheels" "${missing[@]}" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
"$python" -m pip wheel -q --no-deps -w "$wheels" "min-dalle==0.4.11" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }

for wheel in "$wheels"/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1 | tr 'A-Z.-' 'a-z__')
    for held in "${image_has[@]}"; do
        if [ "$name" = "$held" ]; then rm "$wheel"; break; fi
    done
done
echo "bench/wheels: $(ls "$wheels" | wc -l) wheels, $(du -sh "$wheels" | cut -f1)"
ls "$wheels"
