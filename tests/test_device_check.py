"""The GPU check's script, at the tiny sizes of `--cpu`: it must run first time on a lent GPU, so every
code path runs here (bench/device_check.sh → carried wheels → device_check.py → its parts)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

REPO = ROOT
NUMBERS = ["tokens/s", "tokens s", "first call s", "compile s", "VQGAN s", "peak GiB", "bound s", "× bound"]


def load_check():
    spec = importlib.util.spec_from_file_location("device_check", REPO / "bench" / "device_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("device-check")
    env_python = {"PYTHON": sys.executable, "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    # Four times the check's own CPU budget: the suite's other worker shares the two cores with it.
    run = subprocess.run(["bash", "bench/device_check.sh", "--cpu", "--budget", "480", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**env_python, "HOME": str(out)})
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((out / "device_check.json").read_text()), (out / "device_check.md").read_text()


def test_the_cpu_check_prints_every_row_with_numbers(report):
    data, markdown = report
    assert data["bandwidth"]["bandwidth"] > 0
    header = next(line for line in markdown.splitlines() if line.startswith("| part"))
    assert [cell.strip() for cell in header.strip("|").split("|")] == load_check().COLUMNS
    parts = {(row["part"], row["dtype"], row["images"]): row for row in data["rows"]}
    for key in [("nbkit", "float32", 1), ("nbkit", "float32", 4), ("nbkit, 2nd process", "float32", 4),
                ("nbkit", "bfloat16", 1)]:
        row = parts[key]
        assert all(isinstance(row[name], float) and row[name] > 0 for name in NUMBERS), row
    assert parts[("nbkit, 2nd process", "float32", 4)]["raw"]["cache_hits"] >= 3
    golden = [row for row in data["rows"] if row["part"] == "golden tests"]
    assert len(golden) == 2 and all(row["passed"] >= 1 and row["failed"] == 0 for row in golden)
    peer = next(row for row in data["rows"] if row["part"] == "min-dalle")
    if "skipped" not in peer["note"]:     # min-dalle's venv exists where setup_min_dalle.sh ran
        assert all(peer[name] > 0 for name in ["tokens/s", "tokens s", "first call s", "bound s"])
    assert len(markdown.splitlines()) > len(data["rows"])


def test_min_dalle_without_its_install_is_a_skipped_row(tmp_path):
    check = load_check()
    job = {"kind": "min-dalle", "model": "mini", "dtype": "float32", "grid": 1}
    row = check.min_dalle_row(job, tmp_path / "no-python", 10, True, [], 1e9)
    assert row["note"].startswith("skipped: min-dalle not installed") and row["images"] == "–"
