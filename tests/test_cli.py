"""`python -m nbkit` end to end on the tiny fixture models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nbkit.cli import main
from nbkit.output.images import read_png_metadata

FIXTURES = Path(__file__).parent / "fixtures" / "golden"
TINY = ["--model", str(FIXTURES / "dallebart-tiny"), "--vqgan", str(FIXTURES / "vqgan-tiny"), "--dtype", "float32"]


def test_generate_then_rerank(tmp_path, capsys):
    code = main(["generate", "an armchair in the shape of an avocado", "a red cube", "-n", "2", "--seed", "3",
                 "--top-k", "20", "--out", str(tmp_path), "--grid", *TINY])
    out, err = capsys.readouterr()
    assert code == 0, err
    folder = Path(out.strip().splitlines()[-1])
    assert folder.parent == tmp_path and "seed 3; 4 new image(s)" in err
    images = sorted(p for p in folder.glob("*.png") if "_grid" not in p.name)
    assert len(images) == 4 and len(list(folder.glob("*_grid.png"))) == 2
    metadata = read_png_metadata(images[0])
    assert metadata["seed"] == 3 and metadata["settings"]["top_k"] == 20
    assert metadata["prompt"] == "an armchair in the shape of an avocado"

    assert main(["generate", "an armchair in the shape of an avocado", "a red cube", "-n", "2", "--seed", "3",
                 "--top-k", "20", "--out", str(tmp_path), "--grid", *TINY]) == 0
    out, err = capsys.readouterr()
    assert Path(out.strip()) == folder and "0 new image(s)" in err           # the same batch: nothing to redo

    assert main(["rerank", str(folder), "--clip", str(FIXTURES / "clip-tiny")]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[0] == "an armchair in the shape of an avocado" and len(out.splitlines()) == 6
    assert set(json.loads((folder / "ranking.json").read_text())) == {"an armchair in the shape of an avocado",
                                                                      "a red cube"}


def test_download_and_info(tmp_path, capsys):
    assert main(["--cache", str(tmp_path), "download", str(FIXTURES / "vqgan-tiny")]) == 0
    assert str(FIXTURES / "vqgan-tiny") in capsys.readouterr().out
    assert main(["--cache", str(tmp_path), "info"]) == 0
    out = capsys.readouterr().out
    for part in ("nbkit 0.", "devices:", "dtype:", f"cache:        {tmp_path}"):
        assert part in out, part


def test_failures_are_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NBKIT_OFFLINE", "1")
    assert main(["--cache", str(tmp_path), "download", "mini"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nbkit: error: Model 'mini' is not available") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert main(["rerank", str(tmp_path / "missing")]) == 1
    assert "No folder" in capsys.readouterr().err
    assert main(["--debug", "--cache", str(tmp_path), "download", "no-such-model"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_module_entry_point_usage_errors_exit_2():
    run = lambda *args: subprocess.run([sys.executable, "-m", "nbkit", *args], capture_output=True, text=True)
    assert run("--help").returncode == 0
    for command in ("generate", "rerank", "download", "info"):
        assert run(command, "--help").returncode == 0
    bad = run("generate")                              # no prompt
    assert bad.returncode == 2 and "PROMPT" in bad.stderr
    assert run("generate", "x", "-n", "many").returncode == 2
