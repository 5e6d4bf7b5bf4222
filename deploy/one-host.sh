#!/usr/bin/env bash
# One host with several GPUs: one replica per GPU, the front and a local Ray on this host.
# Ray listens on 127.0.0.1 only; users reach the front's port (give it a token if it is not 127.0.0.1).
set -euo pipefail
gpus=$(nvidia-smi -L | wc -l)
exec python -m nbkit serve --model mega --replicas "$gpus" --replica-resources num_gpus=1 \
  --compilation-cache ~/.cache/nbkit/compiled --host 127.0.0.1 --port 8000 "$@"
