"""`python -m nbkit` end to end on the tiny fixture models."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import GOLDEN, assert_pixels_within_one_level, tiny_pipeline
from PIL import Image

from nbkit.cli import main
from nbkit.generation.kept import KeptTokens
from nbkit.png import read_png_metadata
from nbkit.server.folders import EditSource, list_runs
from tests.generation.test_from_image import LOGPROB_RTOL, recomputed_kept_logprob

FIXTURES = GOLDEN
TINY = ["--model", str(FIXTURES / "dallebart-tiny"), "--vqgan", str(FIXTURES / "vqgan-tiny"),
        "--dtype", "float32"]


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
    assert Path(out.strip()) == folder                                       # the same batch: nothing to redo
    assert f"already complete: all 4 image(s) of this run (seed 3) are in {folder}" in err

    assert main(["rerank", str(folder), "--clip", str(FIXTURES / "clip-tiny")]) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("prompt 000 'an armchair in the shape of an avocado'") and len(lines) == 6
    assert f"(best first: {folder / '000_an-armchair-in-the-shape-of-an-avocado_ranked.png'})" in lines[0]
    assert lines[3].startswith("prompt 001 'a red cube'")
    shown = sorted(line.split()[2] for line in lines[1:3])           # "  score  image 000  file"
    assert shown == ["000", "001"] and all(line.split()[3].endswith(f"_{line.split()[2]}.png")
                                           for line in lines[1:3])
    assert [g["prompt"] for g in json.loads((folder / "ranking.json").read_text())] == [
        "an armchair in the shape of an avocado", "a red cube"]


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
    out, err = capsys.readouterr()
    assert out.startswith("mini: FAILED: DALL·E model 'mini' is not available") and "Traceback" not in err
    assert err == "nbkit: error: 1 of 1 model(s) could not be downloaded (mini): see above.\n"
    assert main(["rerank", str(tmp_path / "missing")]) == 1
    assert "No folder" in capsys.readouterr().err
    assert main(["--debug", "--cache", str(tmp_path), "download", "no-such-model"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_usage_errors_exit_2_and_help_exits_0(capsys):
    """The parser's answers, in this process (each `python -m nbkit` costs seconds of imports); the module
    entry point's exit status is checked end to end below."""
    def status(*args: str) -> tuple[int, str]:
        with pytest.raises(SystemExit) as exit_code:
            main(list(args))
        return exit_code.value.code, capsys.readouterr().err

    assert status("--help")[0] == 0
    for command in ("generate", "rerank", "download", "info"):
        assert status(command, "--help")[0] == 0
    code, err = status("generate")                     # no prompt
    assert code == 2 and "PROMPT" in err
    assert status("generate", "x", "-n", "many")[0] == 2


def test_module_entry_point_usage_errors_exit_2():
    bad = subprocess.run([sys.executable, "-m", "nbkit", "generate"], capture_output=True, text=True)
    assert bad.returncode == 2 and "PROMPT" in bad.stderr and "usage: nbkit" in bad.stderr


def _run_entries(stdout: str, stderr: str, devices: int) -> list[dict]:
    """The images of a `generate` run, from its output (its folder is the last line), with their pixels and
    the tokens their PNGs record."""
    assert f"on {devices} cpu device(s)" in stderr
    folder = Path(stdout.strip().splitlines()[-1])
    entries = sorted((json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()),
                     key=lambda e: (e["prompt_index"], e["image_index"]))
    for entry in entries:
        entry["pixels"] = np.asarray(Image.open(folder / entry["file"]), np.int16)
        entry["png_tokens"] = read_png_metadata(folder / entry["file"])["tokens"]
    return entries


def test_1_and_8_devices_make_identical_tokens_and_pixels_within_one_level(tmp_path, capsys, eight_devices):
    """Tokens are the image's identity; the VQGAN's sums may run in another order on 8 devices, and
    the truncation to uint8 can then fall one level apart (README: "What is identical"). The 8 devices' run
    is the session's 8-device process's (tests/eight_devices_run.py), with the same arguments."""
    from tests.eight_devices_run import CLI_ARGS

    assert main([*CLI_ARGS, "--out", str(tmp_path / "one"), *TINY]) == 0
    one = _run_entries(*capsys.readouterr(), devices=1)
    run = eight_devices.results["cli"]
    assert run["code"] == 0, run["stderr"][-2000:]
    eight = _run_entries(run["stdout"], run["stderr"], devices=8)
    assert len(one) == len(eight) == 6
    for a, b in zip(one, eight, strict=True):
        assert a["tokens"] == b["tokens"] and len(a["tokens"]) == 256
        assert a["png_tokens"] == a["tokens"] and b["png_tokens"] == b["tokens"]
        assert_pixels_within_one_level(a["pixels"], b["pixels"], a["file"])


def test_generate_with_a_negative_prompt_records_it_and_reproduces(tmp_path, capsys):
    from nbkit.output.reproduction import reproduce

    args = ["generate", "a red cube", "-n", "1", "--seed", "4", "--out", str(tmp_path), *TINY]
    assert main([*args, "--negative", "a blue sphere"]) == 0
    with_negative = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(args) == 0
    without = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert with_negative != without                     # another batch, so another run folder
    png = next(with_negative.glob("*_000.png"))
    metadata = read_png_metadata(png)
    assert metadata["negative_prompt"] == "a blue sphere"
    assert metadata["tokens"] != read_png_metadata(next(without.glob("*_000.png")))["tokens"]
    pipe = tiny_pipeline()
    pipe.name = metadata["model"]
    assert reproduce(pipe, png).check().tokens.tolist() == metadata["tokens"]


def test_vary_extend_and_fill_from_a_saved_png(tmp_path, capsys, monkeypatch):
    assert main(["generate", "a red cube", "-n", "4", "--seed", "5", "--seamless", "--out", str(tmp_path),
                 *TINY]) == 0
    out, err = capsys.readouterr()
    folder = Path(out.strip().splitlines()[-1])
    seamless = next(folder.glob("*_seamless.png"))
    assert Image.open(seamless).size == (512, 512) and read_png_metadata(seamless)["kind"] == "seamless"
    source = sorted(folder.glob("000_*_s5_000.png"))[0]
    source_tokens = read_png_metadata(source)["tokens"]

    assert main(["vary", str(source), "-n", "2", "--keep-rows", "5", "--seed", "1", "--negative", "fog",
                 "--out", str(tmp_path), *TINY[2:]]) == 0                   # no --model: the PNG's
    out, err = capsys.readouterr()
    vary_folder = Path(out.strip().splitlines()[-1])
    varied = sorted(vary_folder.glob("*.png"))
    assert len(varied) == 2 and "first 5 of 16 rows kept" in err
    assert f"model: {TINY[1]} (the one {source.name} names" in err and vary_folder.name.endswith("_vary5")
    assert read_png_metadata(varied[0])["model"] == TINY[1]
    metadata = read_png_metadata(varied[0])
    assert metadata["tokens"][:80] == source_tokens[:80] and metadata["prompt"] == "a red cube"
    # an image of a run in --out is named as the server names it, "<run>/<file>"
    assert metadata["source"]["file"] == f"{folder.name}/{source.name}"
    assert metadata["source"]["keep_rows"] == 5
    assert metadata["negative_prompt"] == "fog"

    assert main(["extend", str(source), "--right", "4", "--times", "2", "--seed", "2", "--out", str(tmp_path),
                 *TINY]) == 0
    out, err = capsys.readouterr()
    stitched = Path(out.strip().splitlines()[-1])
    assert Image.open(stitched).size == (256 + 2 * 4 * 16, 256) and stitched.parent.name.endswith("_right4")
    pieces = read_png_metadata(stitched)["pieces"]
    assert len(pieces) == 2 and all((stitched.parent / piece).is_file() for piece in pieces)
    second = read_png_metadata(stitched.parent / pieces[1])
    listed = {run.name: run for run in list_runs(tmp_path, 10)}      # as the page's runs list reads it
    first_listed = next(image for image in listed[stitched.parent.name].images if image.file == pieces[0])
    assert first_listed.edited_from == EditSource(folder.name, source.name, "extend", "right", 4)
    assert second["source"]["file"] == pieces[0] and second["image_index"] == 1
    grid = lambda tokens, width=16: np.asarray(tokens).reshape(16, width)
    first_piece = grid(read_png_metadata(stitched.parent / pieces[0])["tokens"])
    second_piece = grid(second["tokens"])
    assert first_piece[:, :12].tolist() == grid(source_tokens)[:, 4:].tolist()      # moved left by 4, kept
    assert second_piece[:, :12].tolist() == first_piece[:, 4:].tolist()
    whole = grid(read_png_metadata(stitched)["tokens"], 24)                         # source + each new band
    assert whole.tolist() == np.concatenate([grid(source_tokens), first_piece[:, 12:], second_piece[:, 12:]],
                                            axis=1).tolist()

    monkeypatch.chdir(FIXTURES)                               # a model given as a relative path ...
    assert main(["fill", str(source), "--region", "4", "4", "8", "12", "-n", "3", "--seed", "2",
                 "--out", str(tmp_path), "--model", "./dallebart-tiny", *TINY[2:]]) == 0
    out, err = capsys.readouterr()
    printed = [line.split() for line in err.splitlines() if line.startswith("  ") and ".png" in line]
    filled = Path(out.strip().splitlines()[-1])
    assert filled.name.endswith("_fill") and filled.is_absolute()
    recorded = read_png_metadata(filled / printed[0][1])["model"]
    assert recorded == str((FIXTURES / "dallebart-tiny").resolve())   # ... is recorded absolutely
    pipe = tiny_pipeline()
    recomputed = {}
    for _, name in printed:             # each candidate's score, recomputed apart from the sampler
        metadata = read_png_metadata(filled / name)
        tokens = np.asarray(metadata["tokens"])
        candidate = SimpleNamespace(prompt=metadata["prompt"], negative_prompt=metadata["negative_prompt"],
                                    tokens=tokens, kept=KeptTokens.from_record(tokens, metadata["kept_mask"]))
        recomputed[name] = recomputed_kept_logprob(pipe, candidate)
    assert len(printed) == 3
    for score, name in printed:         # printed to 2 decimals
        assert abs(float(score) - recomputed[name]) <= 0.005 + LOGPROB_RTOL * abs(recomputed[name])
    assert [name for _, name in printed] == sorted(recomputed, key=lambda name: -recomputed[name])


def test_bad_edits_are_one_line_errors(tmp_path, capsys):
    plain = tmp_path / "photo.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(plain)
    assert main(["vary", str(plain), *TINY, "--out", str(tmp_path)]) == 1
    assert "its prompt is unknown: give one" in capsys.readouterr().err
    assert main(["vary", str(tmp_path / "missing.png"), *TINY]) == 1
    assert "No image at" in capsys.readouterr().err
    assert main(["vary", str(plain), "--prompt", "x", "--keep-rows", "20", *TINY, "--out",
                 str(tmp_path)]) == 1
    assert "keep_rows must be a whole number from 0 to 16" in capsys.readouterr().err
    assert main(["generate", "x", "--seed", "²", *TINY]) == 1
    assert "seed must be a whole number from 0 to 4294967295 in digits 0-9" in capsys.readouterr().err


def test_prompts_file_reproduce_and_any_seamless_count(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\ufeffa red cube\n\n   \n  a blue sphere  \n", encoding="utf-8")
    out_dir = tmp_path / "out"
    assert main(["generate", "--prompts-file", str(prompts), "-n", "3", "--seamless", "--seed", "4",
                 "--out", str(out_dir), *TINY]) == 0
    out, err = capsys.readouterr()
    folder = Path(out.strip().splitlines()[-1])
    made = sorted(p for p in folder.glob("*_s4_*.png"))
    assert [read_png_metadata(p)["prompt"] for p in made] == ["a red cube"] * 3 + ["a blue sphere"] * 3
    seamless = sorted(folder.glob("*_seamless.png"))
    assert [Image.open(p).size for p in seamless] == [(3 * 256, 256)] * 2        # 3 images: one row

    assert main(["reproduce", str(made[1]), str(made[4]), "--vqgan", TINY[3], "--dtype", "float32"]) == 0
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("reproduced: ")]
    assert len(lines) == 2 and all("all 256 tokens match" in line for line in lines)
    assert lines[1].startswith(f"reproduced: {made[4]}  prompt 001 'a blue sphere', image 001, seed 4")
    assert made[4].name.startswith("001_") and made[4].name.endswith("_001.png")     # as the file names count
    tampered = tmp_path / "tampered.png"
    metadata = read_png_metadata(made[0])
    pixels = np.asarray(Image.open(made[0])).copy()
    pixels[:2, :5] ^= 0x40                                       # 10 pixels changed by 64 levels
    from nbkit.png import png_bytes
    tampered.write_bytes(png_bytes(pixels, metadata))
    assert main(["reproduce", str(tampered), "--vqgan", TINY[3], "--dtype", "float32"]) == 1
    out, err = capsys.readouterr()
    assert "DIFFERS" in out and "all 256 tokens match" in out and "(at most 64)" in out
    differing = int(out.split(" pixel(s) differ")[0].split()[-1])
    assert 10 <= differing < 256 * 256           # the 10 changed, and any within one level of the decoder
    assert "1 of 1 image(s) were not reproduced" in err

    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    for args, message in [(["--prompts-file", str(empty)], "has no prompts"),
                          (["--prompts-file", str(tmp_path / "none.txt")], "Cannot read the prompts file")]:
        assert main(["generate", *args, *TINY, "--out", str(out_dir)]) == 1
        assert message in capsys.readouterr().err
    for args in (["x", "--prompts-file", str(prompts)], []):              # usage errors: exit 2
        with pytest.raises(SystemExit) as exit_code:
            main(["generate", *args, *TINY])
        assert exit_code.value.code == 2 and "PROMPT arguments or --prompts-file" in capsys.readouterr().err
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    assert main(["generate", "--prompts-file", str(tmp_path / "latin1.txt"), *TINY]) == 1
    assert "is not UTF-8 text" in capsys.readouterr().err


def test_generate_upscale_keeps_the_originals_and_reproduce_takes_both_kinds(tmp_path, capsys):
    """`generate --upscale` saves each image's upscaled copy beside it (listed with the run, the 256 px
    image untouched); `reproduce` makes a drawn and an upscaled PNG again in one call."""
    weights = FIXTURES / "esrgan-tiny-x4" / "model.safetensors"
    assert main(["generate", "a red cube", "-n", "2", "--seed", "5", "--out", str(tmp_path), *TINY,
                 "--upscaler", str(weights)]) == 0
    out, err = capsys.readouterr()
    folder = Path(out.strip().splitlines()[-1])
    originals = sorted(folder.glob("*_s5_00[01].png"))
    upscaled = sorted(folder.glob("*_s5_00[01].esrgan-x4.png"))
    assert len(originals) == 2 and len(upscaled) == 2, sorted(p.name for p in folder.iterdir())
    assert [Image.open(p).size for p in originals] == [(256, 256)] * 2
    assert [Image.open(p).size for p in upscaled] == [(1024, 1024)] * 2
    metadata = read_png_metadata(upscaled[1])
    assert metadata["upscaled_from"]["file"] == originals[1].name and metadata["prompt"] == "a red cube"
    assert metadata["upscaler"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    manifest = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    assert [e["file"] for e in manifest if "upscaled_from" in e] == [p.name for p in upscaled]
    assert f"upscaled: {upscaled[0]}" in err

    assert main(["reproduce", str(originals[0]), str(upscaled[1]), "--vqgan", TINY[3],
                 "--dtype", "float32"]) == 0
    out, _ = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("reproduced: ")]
    assert len(lines) == 2 and "all 256 tokens match" in lines[0] and "upscaled again" in lines[1]
    assert main(["generate", "a red cube", "--seed", "6", "--out", str(tmp_path / "none"), *TINY,
                 "--upscaler", str(tmp_path / "missing.pth")]) == 1        # refused before anything is made
    err = capsys.readouterr().err
    assert f"--upscaler {tmp_path / 'missing.pth'}: Unknown upscaler" in err
    assert not (tmp_path / "none").exists()
    originals[1].write_bytes(originals[0].read_bytes())        # the source is no longer the one it names
    assert main(["reproduce", str(upscaled[1])]) == 1
    assert "is not the file" in capsys.readouterr().err


def _tiny_translators(monkeypatch, loaded: list):
    """Registered translator names resolve to the tiny Marian fixture (the hub cannot be reached here)."""
    from nbkit.weights import hub

    fetch = hub.fetch

    def fake_fetch(model, cache=None, progress=True, kind=None):
        if str(model).startswith("translate-"):
            loaded.append(str(model))
            return FIXTURES / "marian-tiny"
        return fetch(model, cache, progress, kind=kind)

    monkeypatch.setattr(hub, "fetch", fake_fetch)


def test_generate_translates_a_chinese_prompt_and_records_both(tmp_path, capsys, monkeypatch):
    from nbkit.output.reproduction import reproduce

    loaded = []
    _tiny_translators(monkeypatch, loaded)
    typed = "一只穿着宇航服的猫"
    assert main(["generate", typed, "--translate", "auto", "--seed", "5", "--out", str(tmp_path), *TINY]) == 0
    out, err = capsys.readouterr()
    folder = Path(out.strip().splitlines()[-1])
    assert set(loaded) == {"translate-zh"} and "translated with translate-zh" in err    # checked, then loaded
    png = next(folder.glob("*_000.png"))
    metadata = read_png_metadata(png)
    assert metadata["translation"] == {"typed_prompt": typed, "translator": "translate-zh",
                                       "translator_revision": "main"}
    english = metadata["prompt"]
    from nbkit.text.translate import Translator  # random tiny weights: their English is a word mix
    assert english and english == Translator(FIXTURES / "marian-tiny").translate([typed])[0].english
    manifest = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    assert manifest[0]["translation"]["typed_prompt"] == typed and manifest[0]["prompt"] == english
    assert "yi-zhi" in folder.name                     # the typed prompt, readable, names the folder
    loaded.clear()
    pipe = tiny_pipeline()
    pipe.name = metadata["model"]
    assert reproduce(pipe, png).check().tokens.tolist() == metadata["tokens"] and loaded == []


def test_english_prompts_load_no_translator(tmp_path, capsys, monkeypatch):
    loaded = []
    _tiny_translators(monkeypatch, loaded)
    assert main(["generate", "a red cube", "--seed", "5", "--out", str(tmp_path), *TINY]) == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert loaded == [] and "translation" not in read_png_metadata(next(folder.glob("*_000.png")))


def test_translate_off_draws_the_prompt_as_typed(tmp_path, capsys, monkeypatch):
    loaded = []
    _tiny_translators(monkeypatch, loaded)
    args = ["generate", "кошка", "--translate", "off", "--seed", "5", "--out", str(tmp_path), *TINY]
    assert main(args) == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert loaded == [] and read_png_metadata(next(folder.glob("*_000.png")))["prompt"] == "кошка"


def test_generate_says_each_stage_and_which_prompt_was_cut(tmp_path, capsys, recwarn):
    long_prompt = "a very long prompt " * 8                  # the tiny model reads 16 text tokens
    assert main(["generate", long_prompt, "a red cube", "--seed", "3", "--out", str(tmp_path), *TINY]) == 0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == f"loading models: {TINY[1]} and {TINY[3]} in float32 …"
    assert lines[1].startswith(f"loaded {TINY[1]} in ")
    note = [line for line in lines if line.startswith("note: ")]
    assert len(note) == 1 and "1 prompt(s) are longer than the model's 16 text tokens and were cut" in note[0]
    assert repr(long_prompt[:57] + "…") in note[0] and "a red cube" not in note[0]
    stages = [line for line in lines if " · " in line or line in ("decoding pixels", "saving")]
    assert stages[0].startswith("compiling (first time for this size) · 0 of 2 images · 0 of 512 tokens")
    assert any(line.startswith("drawing · 0 of 2 images · ") for line in stages)
    assert stages[-2].startswith("decoding pixels · 0 of 2 images")
    assert stages[-1] == "saving · 2 of 2 images"
    assert not [w for w in recwarn if "were cut" in str(w.message)]      # said once, as the note


def test_the_bar_keeps_a_share_for_the_decode():
    from nbkit.cli.display import RunBar

    bar = RunBar(images=2, length=256)
    label = SimpleNamespace(label="decoding pixels · 0 of 2 images")
    bar.show(label, images_done=0, tokens_done=512, stage="decoding")   # every token drawn, none decoded
    assert bar.position == 512 < bar.total == 2 * (256 + 32)
    bar.show(SimpleNamespace(label="saving · 2 of 2 images"), images_done=2, tokens_done=512, stage="saving")
    assert bar.position == bar.total
    bar.close()


def test_every_missing_model_is_named_with_its_flag_before_anything_loads(tmp_path, capsys, monkeypatch):
    import nbkit.generation.pipeline as pipeline_module

    monkeypatch.setenv("NBKIT_OFFLINE", "1")
    monkeypatch.setattr(pipeline_module, "load_dallebart", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(["--cache", str(tmp_path), "generate", "a cat", "--upscale", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nbkit: error: 3 models cannot be had (nothing was loaded)")
    problems = err.splitlines()[1:]
    assert [line.split(":")[0] for line in problems] == ["  --model mini", "  --vqgan vqgan",
                                                         "  --upscaler esrgan-x4"]
    assert "VQGAN 'vqgan' is not available" in problems[1] and "tokenizer" not in problems[1]
    assert ".pth on a machine that is online" in problems[2]
    assert main(["--cache", str(tmp_path), "generate", "a cat", "--model", TINY[1]]) == 1   # one left
    err = capsys.readouterr().err
    assert err.startswith("nbkit: error: --vqgan vqgan: VQGAN 'vqgan' is not available: offline mode")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("spelled", ["./nonexistent", "nonexistent/"])
def test_a_model_written_as_a_path_is_a_folder(spelled, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "a cat", "--model", spelled, "--vqgan", TINY[3]]) == 1
    err = capsys.readouterr().err
    folder = tmp_path / "nonexistent"
    assert err.startswith(f"nbkit: error: --model {spelled}: Model folder {folder} does not exist")
    assert "Repo id" not in err


def test_upscale_is_a_flag_that_cannot_swallow_a_prompt():
    from nbkit.cli import parser

    args = parser().parse_args(["generate", "--upscale", "a cat"])
    assert args.prompts == ["a cat"] and args.upscale and args.upscaler is None
    args = parser().parse_args(["generate", "a cat", "--upscaler", "esrgan-anime"])
    assert args.prompts == ["a cat"] and args.upscaler == "esrgan-anime"


def test_download_tries_every_name_and_reports_each(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NBKIT_OFFLINE", "1")
    assert main(["--cache", str(tmp_path), "download", "mini", TINY[3], "esrgan-x4"]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("mini: FAILED: DALL·E model 'mini' is not available")
    assert lines[1] == f"{TINY[3]}: {Path(TINY[3]).resolve()}"
    assert lines[2].startswith("esrgan-x4: FAILED: upscaler 'esrgan-x4' is not available")
    assert err.strip() == ("nbkit: error: 2 of 3 model(s) could not be downloaded (mini, esrgan-x4): "
                           "see above.")


def test_info_opens_no_weights_and_builds_no_model(tmp_path, capsys, monkeypatch):
    import builtins
    import io
    import shutil

    from nbkit.weights import hub, registry

    folder = tmp_path / "cache" / "hub" / "org--vqgan" / ("0" * 40)
    shutil.copytree(TINY[3], folder)
    (folder / hub.VERIFIED_FILE).write_text("{}")
    opened, real_open = [], builtins.open

    def watched(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", watched)
    monkeypatch.setattr(io, "open", watched)                            # what pathlib opens files with
    monkeypatch.setattr(registry, "counted_parameters", lambda *a: pytest.fail("a model was built to count"))
    monkeypatch.setenv("NBKIT_OUTPUT", str(tmp_path / "runs"))
    assert main(["--cache", str(tmp_path / "cache"), "info"]) == 0
    out = capsys.readouterr().out
    assert not [name for name in opened if name.endswith((".msgpack", ".pth", ".safetensors", ".bin"))]
    assert f"outputs:      {tmp_path / 'runs'} " in out
    assert f"cache:        {tmp_path / 'cache'} (1 model folder(s)" in out and f"org/vqgan@{'0' * 40}" in out
    model = next(line for line in out.splitlines() if line.startswith("model:"))
    assert model.startswith("model:        mini (a CPU: ")          # the tests run on the CPU


def test_help_describes_every_argument(capsys):
    import re

    texts = {}
    for command in ("generate", "rerank", "download"):
        with pytest.raises(SystemExit) as exit_code:
            main([command, "--help"])
        assert exit_code.value.code == 0
        texts[command] = capsys.readouterr().out
    for command, argument in [("generate", "PROMPT"), ("generate", "--temperature T"),
                              ("generate", "--top-k K"), ("generate", "--top-p P"), ("rerank", "DIR"),
                              ("download", "NAME")]:
        assert re.search(rf"^  {re.escape(argument)}\s+\w", texts[command], re.MULTILINE), (command, argument)
    for name in ("mini", "mega", "vqgan", "clip-b32", "esrgan-x4", "translate-zh"):
        assert name in texts["download"], name


def test_edits_of_a_translated_image_keep_the_typed_prompt(tmp_path, capsys, monkeypatch):
    loaded = []
    _tiny_translators(monkeypatch, loaded)
    typed = "一只穿着宇航服的猫"
    assert main(["generate", typed, "-n", "1", "--seed", "5", "--out", str(tmp_path), *TINY]) == 0
    source = next(Path(capsys.readouterr().out.strip().splitlines()[-1]).glob("*_000.png"))
    english = read_png_metadata(source)["prompt"]
    made = {}
    for edit, options in (("vary", ["-n", "1"]), ("extend", ["--right", "4", "--times", "2"]),
                          ("fill", ["--region", "4", "4", "8", "12", "-n", "2"])):
        assert main([edit, str(source), "--seed", "3", "--out", str(tmp_path / edit), *options, *TINY]) == 0
        made[edit] = sorted(p for p in (tmp_path / edit).rglob("*.png") if "grid" not in p.name
                            and "pieces" not in read_png_metadata(p))       # the joined picture has none
        capsys.readouterr()
    assert len(made["extend"]) == 2 and len(made["fill"]) == 2
    for edit, files in made.items():
        for png in files:
            metadata = read_png_metadata(png)
            assert metadata["prompt"] == english, (edit, png)
            assert metadata["translation"]["typed_prompt"] == typed, (edit, png)
            assert metadata["translation"]["translator"] == "translate-zh"
    negative = "雾"                    # a negative prompt typed for the edit is translated and recorded
    assert main(["vary", str(source), "-n", "1", "--seed", "3", "--negative", negative,
                 "--out", str(tmp_path / "negative"), *TINY]) == 0
    varied = next((tmp_path / "negative").rglob("*_000.png"))
    metadata = read_png_metadata(varied)
    assert metadata["translation"]["typed_prompt"] == typed and metadata["prompt"] == english
    assert metadata["translation"]["typed_negative_prompt"] == negative
    assert metadata["negative_prompt"] != negative
    assert main(["vary", str(source), "-n", "1", "--seed", "3", "--prompt", "a dog",    # a new English prompt
                 "--out", str(tmp_path / "dog"), *TINY]) == 0
    assert "translation" not in read_png_metadata(next((tmp_path / "dog").rglob("*_000.png")))


MAKING = ("generate", "vary", "extend", "fill", "reproduce", "serve")


def test_every_drawing_command_offers_the_weight_storage_with_its_help(capsys):
    import re

    for command in MAKING:
        with pytest.raises(SystemExit) as exit_code:
            main([command, "--help"])
        assert exit_code.value.code == 0
        text = capsys.readouterr().out
        listed = r"^  --weight-storage \{float32,bfloat16,int8,auto\}\n\s+\w+"
        assert re.search(listed, text, re.MULTILINE), command
        assert ("the storage each PNG records" if command == "reproduce" else "only with --dtype") in \
            " ".join(text.split()), command


def test_narrower_weight_storage_with_a_half_dtype_is_refused_naming_the_flag(tmp_path, capsys, monkeypatch):
    from nbkit.generation import device
    from nbkit.generation.pipeline import Pipeline

    for command in (["generate", "a cat"], ["vary", "x.png"], ["reproduce", "x.png"], ["serve"]):
        with pytest.raises(SystemExit) as exit_code:
            main([*command, "--dtype", "bfloat16", "--weight-storage", "int8"])
        err = capsys.readouterr().err
        assert exit_code.value.code == 2 and "--weight-storage int8: int8 weights compute in float32" in err
        assert "add --dtype float32" in err
    # No --dtype, on a device whose default is bfloat16: refused before anything loads.
    monkeypatch.setattr(device, "detect", lambda: SimpleNamespace(recommended_dtype="bfloat16"))
    monkeypatch.setattr(Pipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded a pipeline"))
    assert main(["generate", "a cat", "--weight-storage", "bfloat16", "--out", str(tmp_path), *TINY[:4]]) == 1
    err = capsys.readouterr().err
    assert "nbkit: error: --weight-storage bfloat16: bfloat16 weights compute in float32, not bfloat16" in err
    assert "(bfloat16 is this device's default): add --dtype float32" in err


def test_generate_with_int8_weights_records_them_and_reproduce_loads_each_storage(tmp_path, capsys):
    made = {}
    for storage in ("int8", "float32"):
        assert main(["generate", "a red cube", "--seed", "6", "--weight-storage", storage,
                     "--out", str(tmp_path / storage), *TINY]) == 0
        out, err = capsys.readouterr()
        assert ("weights kept as int8" in err) == (storage == "int8")
        made[storage] = next(Path(out.strip().splitlines()[-1]).glob("*_000.png"))
        assert read_png_metadata(made[storage])["weight_storage"] == storage
    assert main(["reproduce", str(made["int8"]), str(made["float32"]), "--vqgan", TINY[3],
                 "--dtype", "float32"]) == 0
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("reproduced: ")]
    assert len(lines) == 2 and all("all 256 tokens match" in line for line in lines)
    assert "(float32, weights kept as int8, row" in lines[0] and "(float32, row" in lines[1]
    assert err.count("loaded ") == 2           # one pipeline per (model, dtype, storage)
