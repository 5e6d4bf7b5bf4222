#!/usr/bin/env bash
# Several hosts on one PRIVATE network (never the internet: see README.md, Security).
# On every host: pip install 'nbkit[cluster]' and `nbkit download mega`, same versions everywhere.
# The same token on every host turns Ray's token authentication on:
#   export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<the same long random secret everywhere>
set -euo pipefail
head_ip=${HEAD_IP:?set HEAD_IP to the head host address on the private network}

case "${1:-}" in
  head)     # on the head host: Ray's control plane (no GPU work of its own), then the front
    ray start --head --node-ip-address "$head_ip" --port 6379 --num-gpus 0 \
      --dashboard-host 127.0.0.1
    # One replica per GPU of the whole cluster; each waits for a free GPU on any host.
    exec python -m nbkit serve --model mega --ray-address "$head_ip:6379" \
      --replicas "${REPLICAS:?set REPLICAS to the number of GPUs in the cluster}" \
      --replica-resources num_gpus=1 --host 0.0.0.0 --token "${TOKEN:?set TOKEN for the front}" ;;
  worker)   # on each GPU host
    exec ray start --address "$head_ip:6379" --block ;;
  *)
    echo "usage: HEAD_IP=10.0.0.1 $0 head|worker" >&2; exit 2 ;;
esac
