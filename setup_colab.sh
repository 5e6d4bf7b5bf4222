#!/usr/bin/env bash
# Installs nbkit on Colab (GPU or TPU runtime), a Jupyter server, or a Linux shell.
# Keeps an installed jax that fits the accelerator; installs one only when none does.
# Safe to run twice.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"

fail() { echo "setup_colab.sh: $*" >&2; exit 1; }
command -v "$PYTHON" >/dev/null || fail "no $PYTHON found; install Python 3.10 or newer."

accelerator=cpu
if [ -n "${COLAB_TPU_ADDR:-}" ] || [ -n "${TPU_NAME:-}" ] || ls /dev/accel* >/dev/null 2>&1; then
  accelerator=tpu
elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  accelerator=gpu
fi

jax_backend=$("$PYTHON" -c "import jax; print(jax.default_backend())" 2>/dev/null || echo none)
if [ "$jax_backend" = "$accelerator" ]; then
  echo "Keeping the installed jax ($jax_backend)."
else
  case "$accelerator" in
    tpu) spec="jax[tpu]" ;;
    gpu) spec="jax[cuda12]" ;;
    *)   spec="jax" ;;
  esac
  echo "Installing $spec (found: $jax_backend, need: $accelerator)..."
  "$PYTHON" -m pip install --quiet --upgrade "$spec" || fail "could not install $spec."
fi

"$PYTHON" -m pip install --quiet -r "$here/requirements.txt" || fail "could not install requirements.txt."
installed=$(cd / && "$PYTHON" -c "import nbkit, os; print(os.path.dirname(os.path.dirname(os.path.abspath(nbkit.__file__))))" 2>/dev/null || true)
if [ "$installed" = "$here" ]; then
  echo "Keeping nbkit, installed from $here."
else
  "$PYTHON" -m pip install --quiet --no-deps -e "$here" || fail "could not install nbkit from $here."
fi

(cd / && "$PYTHON" - <<'PY') || fail "nbkit does not import; see the error above."
import platform, jax, nbkit
print(f"python {platform.python_version()} | jax {jax.__version__} | "
      f"devices {jax.device_count()} x {jax.devices()[0].device_kind} | nbkit {nbkit.__version__}")
PY
