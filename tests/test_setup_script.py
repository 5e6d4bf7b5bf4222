"""setup_colab.sh's failure path (its install path runs in CI's .ci/run, in a fresh venv)."""

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "setup_colab.sh"


def test_a_missing_python_stops_with_a_clear_message_and_exit_1():
    out = subprocess.run(["bash", str(SCRIPT)], env={"PATH": "/usr/bin:/bin", "PYTHON": "/no/such/python3"},
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip() == "setup_colab.sh: no /no/such/python3 found; install Python 3.10 or newer."
