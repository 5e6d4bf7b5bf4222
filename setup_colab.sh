#!/usr/bin/env bash
# Installs nbkit on Colab (GPU or TPU runtime), a Jupyter server, or a Linux shell. Safe to run twice.
# What it keeps, and what it installs:
# - jax: kept when the installed one runs on this machine's accelerator (on Colab: its jax 0.7.2, with the
#   CUDA plugin on a GPU runtime, with libtpu on the TPU one); else jax[cuda12], jax[tpu] or the CPU build.
# - the rest of pyproject.toml's list (the one list; --test adds its `test` extra): pip keeps every package
#   that meets its lower bound, and those bounds are Colab's versions (flax 0.11.2, ipywidgets 7.7.1,
#   numpy 2.1.3, ...), so on Colab it adds only what Colab lacks (ftfy, emoji, unidecode; with --test
#   ruff, playwright); elsewhere what is missing, at today's versions. It upgrades only what is older.
# - nbkit itself, editable from this folder; with --test, Debian's chromium for the page's tests.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"

usage="usage: bash setup_colab.sh [--test]
  --test   also install what the tests need (pyproject.toml's \`test\` extra: pytest, ruff, nbclient...)"
fail() { echo "setup_colab.sh: $*" >&2; exit 1; }

extra=""
for arg in "$@"; do
  case "$arg" in
    --test) extra=test ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) printf 'setup_colab.sh: unknown argument: %s\n%s\n' "$arg" "$usage" >&2; exit 2 ;;
  esac
done

command -v "$PYTHON" >/dev/null || fail "no $PYTHON found; install Python 3.11 or newer."
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || fail "$PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'); nbkit needs 3.11 or newer."

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

# pyproject.toml's dependencies (and, with --test, its test extra). pip leaves what already
# fits alone (the jax above included) and needs no network when everything does.
listed=$("$PYTHON" - "$here/pyproject.toml" "$extra" <<'PY'
import sys
import tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"].get(sys.argv[2], [])))
PY
) || fail "could not read the dependencies from $here/pyproject.toml."
requirements=()
while IFS= read -r line; do requirements+=("$line"); done <<<"$listed"
"$PYTHON" -m pip install --quiet "${requirements[@]}" \
  || fail "could not install the dependencies in pyproject.toml${extra:+ (with its $extra extra)}."

installed=$(cd / && "$PYTHON" -c "import nbkit, os; print(os.path.dirname(os.path.dirname(os.path.abspath(nbkit.__file__))))" 2>/dev/null || true)
if [ "$installed" = "$here" ]; then
  echo "Keeping nbkit, installed from $here."
else
  "$PYTHON" -m pip install --quiet --no-deps -e "$here" || fail "could not install nbkit from $here."
fi

# The page's browser tests (tests/server/test_page.py) drive Debian's Chromium: --test installs it with
# apt-get when it is missing and this is root. A failure here is reported, not fatal.
chromium=/usr/bin/chromium
if [ "$extra" = test ] && [ ! -x "$chromium" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "Installing chromium with apt-get (for the page's browser tests)..."
    apt_log=$(mktemp)
    apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
    if { apt_install || { apt-get update -qq && apt_install; }; } >"$apt_log" 2>&1 && [ -x "$chromium" ]; then
      rm -f "$apt_log"
    else
      tail -n 5 "$apt_log" >&2
      rm -f "$apt_log"
      echo "setup_colab.sh: could not install chromium with apt-get (above); tests/server/test_page.py needs" \
           "$chromium and will fail without it." >&2
    fi
  elif command -v apt-get >/dev/null; then
    echo "setup_colab.sh: no $chromium; tests/server/test_page.py needs it: sudo apt-get install -y chromium" >&2
  else
    echo "setup_colab.sh: no $chromium and no apt-get to install it: tests/server/test_page.py will be skipped." >&2
  fi
fi

(cd / && "$PYTHON" - <<'PY') || fail "nbkit does not import; see the error above."
import platform, jax, nbkit
print(f"python {platform.python_version()} | jax {jax.__version__} | "
      f"devices {jax.device_count()} x {jax.devices()[0].device_kind} | nbkit {nbkit.__version__}")
PY
