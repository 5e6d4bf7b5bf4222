"""Hostile input, sent where nbkit reads it: images of every mode and bit depth, animated, truncated and
bomb files, text with every kind of Unicode trouble, deep JSON, huge numbers, damaged run folders, slow
clients. Each must get a clear 4xx (or a one-line error), and the server must stay up, answer others
within a bound, give its memory back and lose or half-list nothing saved.

The pure parts are tested as functions; the HTTP ones against one shared `python -m nbkit serve` with the
tiny models (tests/server_process.py), on 127.0.0.1 only, every loop bounded.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from nbkit.output.records import ImageRecord
from nbkit.png import png_bytes, read_png_metadata
from tests.server.test_server import call, finished, manifest, raw_call, submit, wait_for
from tests.server_process import module_server

# ---- hostile files, made here (small on disk, whatever their headers say)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int, depth: int = 8, color: int = 2, text: dict | None = None,
                 compressed_zeros: bool = False) -> bytes:
    """A PNG whose header says width×height. With `compressed_zeros` its pixel data is really there
    (all zero: a decompression bomb, tiny on disk); else a few bytes, so it is truncated."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4, 3: 1}[color]
    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
    for key, value in (text or {}).items():
        head += _chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8"))
    if compressed_zeros:
        row = b"\0" * (1 + (width * channels * depth + 7) // 8)
        packer, parts = zlib.compressobj(9), []
        for _ in range(height):
            parts.append(packer.compress(row))
        parts.append(packer.flush())
        data = b"".join(parts)
    else:
        data = zlib.compress(b"\0" * 64)
    return head + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def saved_like_nbkit(image: Image.Image, prompt: str = "a hostile picture", **extra) -> bytes:
    """`image` as a PNG with nbkit's metadata (tokens, prompt, …), as a run holds it."""
    record = ImageRecord(prompt, 0, 0, 1, "tiny", tokens=tuple(range(256)))
    buffer = io.BytesIO()
    info = __import__("PIL.PngImagePlugin", fromlist=["PngInfo"]).PngInfo()
    info.add_itxt("nbkit", json.dumps({**record.to_metadata(), **extra}))
    image.save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def picture(width: int = 8, height: int = 8, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(width * height).integers(0, 256, (height, width, channels), np.uint8)


def every_mode(tmp: Path) -> dict[str, Path]:
    """One small file per mode and bit depth the readers must take."""
    rgb = picture()
    grey = rgb[..., 0]
    made = {
        "1-bit": Image.fromarray(grey > 127),
        "L": Image.fromarray(grey, "L"),
        "LA": Image.fromarray(rgb[..., :2], "LA"),
        "I;16": Image.fromarray(grey.astype(np.uint16) * 257),
        "P": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4),
        "P-2bit": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4),
        "RGB": Image.fromarray(rgb),
        "RGBA": Image.fromarray(picture(channels=4), "RGBA"),
    }
    files = {}
    for name, image in made.items():
        path = tmp / f"{name}.png"
        image.save(path, bits=2) if name == "P-2bit" else image.save(path)
        files[name] = path
    for name, kind in (("jpeg-CMYK", "JPEG"), ("webp", "WEBP"), ("bmp", "BMP")):
        path = tmp / f"{name}.{kind.lower()}"
        (Image.fromarray(rgb).convert("CMYK") if "CMYK" in name else Image.fromarray(rgb)).save(path, kind)
        files[name] = path
    deep = tmp / "RGB-16bit.png"            # 16 bits a channel: written by hand (Pillow writes 8)
    rows = b"".join(b"\0" + np.full((8, 3), 40000, ">u2").tobytes() for _ in range(8))
    deep.write_bytes(png_claiming(8, 8, 16, 2)[:33] + _chunk(b"IDAT", zlib.compress(rows))
                     + _chunk(b"IEND", b""))
    files["RGB-16bit"] = deep
    return files


def refused_files(tmp: Path) -> dict[str, Path]:
    """Files every reader must refuse with a one-line error (none decoded at any size)."""
    whole = png_bytes(picture(64, 64))
    frames = [Image.fromarray(picture(8, 8)), Image.fromarray(picture(8, 8)[::-1])]
    gif, apng = io.BytesIO(), io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    frames[0].save(apng, "PNG", save_all=True, append_images=frames[1:])
    tiff = io.BytesIO()
    frames[0].save(tiff, "TIFF")
    contents = {
        "narrow": png_claiming(1, 100000),            # CLIP would make it 224×22,400,000
        "huge": png_claiming(13000, 13000),
        "huge-16bit": png_claiming(9000, 9000, 16, 6),
        "empty-header": png_claiming(0, 5),
        "truncated": whole[: len(whole) // 2],
        "cut-in-pixels": whole[:-40],
        "not-an-image": b"just some text, not a picture",
        "nothing": b"",
        "animated-gif": gif.getvalue(),
        "animated-png": apng.getvalue(),
        "tiff": tiff.getvalue(),
    }
    files = {}
    for name, data in contents.items():
        (tmp / f"{name}.png").write_bytes(data)
        files[name] = tmp / f"{name}.png"
    return files


# ---- the one image reader


def test_every_mode_and_bit_depth_is_read_as_8_bit(tmp_path):
    from nbkit.imagefile import read_rgb
    from nbkit.output.upscaled import read_picture

    for name, path in every_mode(tmp_path).items():
        rgb = read_rgb(path)
        assert rgb.mode == "RGB" and rgb.size == (8, 8), name
        pixels = read_picture(path).pixels
        assert pixels.dtype == np.uint8 and pixels.shape[:2] == (8, 8), name
    deep = np.asarray(read_rgb(tmp_path / "RGB-16bit.png"))
    assert (deep == round(40000 / 257)).all()       # 16-bit values scaled, not cut


def test_hostile_files_are_one_line_errors_from_every_reader(tmp_path):
    from nbkit.generation.upscale import UpscaleError
    from nbkit.imagefile import ImageRefused, read_image
    from nbkit.models.vqgan import image_to_pixels
    from nbkit.output.upscaled import read_picture

    for name, path in refused_files(tmp_path).items():
        for read, kind in ((read_image, ImageRefused), (read_picture, UpscaleError),
                           (lambda p: image_to_pixels(p, 256), ValueError)):
            with pytest.raises(kind) as error:
                read(path)
            message = str(error.value)
            assert "\n" not in message and path.name in message, (name, message)
            assert str(tmp_path) not in message, (name, message)              # no folders shown
    with pytest.raises(ImageRefused, match="longer than 32:1"):
        read_image(tmp_path / "narrow.png")
    with pytest.raises(ImageRefused, match="animated"):
        read_image(tmp_path / "animated-png.png")


def test_png_metadata_is_read_without_decoding_the_pixels(tmp_path, monkeypatch):
    from PIL import ImageFile

    data = saved_like_nbkit(Image.fromarray(picture(4000, 4000)))
    def no_decoding(self):
        raise AssertionError("the pixels were decoded to read the metadata")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert read_png_metadata(data)["prompt"] == "a hostile picture"
    # the header of a bomb is enough to refuse it, a ValueError as before, never a DecompressionBombError
    for path in refused_files(tmp_path).values():
        with pytest.raises(ValueError):
            read_png_metadata(path)


def test_metadata_nested_deeply_is_a_value_error_not_a_recursion_error():
    data = png_claiming(16, 16, text={"nbkit": "[" * 30000 + "]" * 30000})
    with pytest.raises(ValueError, match="not valid JSON"):
        read_png_metadata(data)


def test_clip_preprocessing_never_gets_a_narrow_picture():
    from nbkit.output.rerank import ImagePreprocessing

    with pytest.raises(ValueError, match="longer than 32:1"):
        ImagePreprocessing()([np.zeros((1, 1000, 3), np.uint8)])
    assert ImagePreprocessing()([np.zeros((10, 300, 3), np.uint8)]).shape == (1, 224, 224, 3)


# ---- text that cannot be UTF-8, everywhere it comes in

UNICODE_TROUBLE = {          # must be taken (and come back as sent)
    "nul": "a\x00b", "controls": "a\x1b[31m\x07b", "bidi": "a \u202etxt.exe", "zero-width": "a\u200b\u200db",
    "combining": "a" + "\u0301" * 200, "emoji-zwj": "\U0001f469\u200d\U0001f52c", "noncharacter": "a\uffff",
    "private-use": "\ue000\U000f0000", "bom": "\ufeffa", "nfd": "cafe\u0301", "rtl": "שלום", "cjk": "猫",
    "line-separators": "a\u2028b\u2029c\r\nd"}
NOT_TEXT = ("a \ud800", "\udfff", "a \udcff b", "\ud83d")       # lone surrogates (the last: half an emoji)


def test_text_that_is_not_utf8_is_refused_naming_the_field():
    from nbkit.server.generate_input import parse_generate
    from nbkit.server.job_input import parse_job
    from nbkit.server.protocol import BadInput, Limits

    limits = Limits(4, 300, 16384)
    for text in NOT_TEXT:
        for body, field in (({"prompts": ["fine", text]}, "prompts[1]"), ({"prompt": text}, "prompt"),
                            ({"prompt": "x", "negative_prompt": text}, "negative_prompt")):
            with pytest.raises(BadInput) as error:
                parse_job(body, limits)
            assert error.value.field == field and error.value.status == 400
            assert "surrogate" in error.value.message
        for body in ({"text": text}, {"prompt": text}):
            with pytest.raises(BadInput, match="surrogate"):
                parse_generate(body, limits, 1)
    for name, text in UNICODE_TROUBLE.items():
        assert parse_job({"prompt": text}, limits).spec.prompts == (text,), name


def test_every_front_end_refuses_text_that_is_not_utf8(tmp_path, capsys):
    from nbkit.cli import main
    from nbkit.generation.request import GenerationRequest

    for text in NOT_TEXT:
        with pytest.raises(ValueError, match="not a character"):
            GenerationRequest([text])                   # the notebook form and the server build these
        with pytest.raises(ValueError, match="not a character"):
            GenerationRequest(["fine"], negative_prompt=text)
    # a command line's bytes that are not UTF-8 arrive as \udcxx: one line, before any model is loaded
    assert main(["generate", "a \udcff", "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("nbkit: error: Prompt 0 holds") and "\n" not in error
    assert not (tmp_path / "out").exists()


def test_an_old_run_holding_a_lone_surrogate_is_read_and_sent(tmp_path):
    from nbkit.server.folders import list_runs
    from nbkit.server.protocol import as_json

    run = tmp_path / "out" / "2024-01-01_000000_old"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"prompts": ["a \ud800"], "created": "2024-01-01",
                                              "run_key": "k", "expected_images": 1}))
    record = ImageRecord("a \ud800", 0, 0, 1, "tiny", tokens=tuple(range(256)))
    (run / "a.png").write_bytes(png_bytes(picture(), record.to_metadata()))
    (run / "manifest.jsonl").write_text(json.dumps({"file": "a.png", **record.to_metadata()}) + "\n")
    listed = list_runs(tmp_path / "out", 10)
    json.dumps(as_json(listed, ""), ensure_ascii=False).encode("utf-8")    # what a JSON answer does
    assert listed[0].prompts == ["a \ufffd"] and listed[0].images[0].prompt == "a \ufffd"
    assert read_png_metadata(run / "a.png")["prompt"] == "a \ufffd"


# ---- damaged run folders


def _run(out: Path, name: str, info, lines) -> Path:
    folder = out / name
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(info if isinstance(info, str) else json.dumps(info))
    entries = []
    for line in lines:
        if isinstance(line, dict) and isinstance(line.get("file"), str):
            (folder / line["file"]).write_bytes(png_bytes(picture()))
        entries.append(line if isinstance(line, str) else json.dumps(line))
    (folder / "manifest.jsonl").write_text("\n".join(entries) + "\n")
    return folder


def good_entry(file: str = "a.png", index: int = 0) -> dict:
    return {"file": file, **ImageRecord("a cat", 0, index, 1, "tiny", tokens=tuple(range(256))).to_metadata()}


DAMAGED_RUNS = {
    "prompts-a-number": ({"prompts": 5, "created": "2024-01-03"}, [good_entry()]),
    "created-a-list": ({"prompts": ["x"], "created": [1]}, [good_entry()]),
    "run-json-not-json": ("{not json", [good_entry()]),
    "run-json-a-list": ("[1, 2]", [good_entry()]),
    "no-prompt-index": ({"prompts": ["x"]}, [{k: v for k, v in good_entry().items() if k != "prompt_index"}]),
    "list-values": ({"prompts": ["x"]}, [{**good_entry(), "prompt_index": [0], "image_index": {"a": 1}}]),
    "file-a-number": ({"prompts": ["x"]}, [{**good_entry(), "file": 5}]),
    "prompt-a-dict": ({"prompts": ["x"]}, [{**good_entry(), "prompt": {"x": 1}}]),
    "huge-index": ({"prompts": ["x"]}, [{**good_entry(), "image_index": 10**30}]),
}


def test_a_damaged_run_is_listed_as_damaged_and_the_others_all_the_same(tmp_path):
    from nbkit.server.folders import list_runs
    from nbkit.server.protocol import as_json

    out = tmp_path / "out"
    _run(out, "2024-01-01_000000_good", {"prompts": ["a cat"], "created": "2024-01-01"}, [good_entry()])
    for name, (info, lines) in DAMAGED_RUNS.items():
        _run(out, f"2024-01-02_000000_{name}", info, lines)
    listed = {run.name: run for run in list_runs(out, 100)}
    json.dumps(as_json(list(listed.values()), ""))
    assert set(listed) == {"2024-01-01_000000_good", *(f"2024-01-02_000000_{n}" for n in DAMAGED_RUNS)}
    assert listed["2024-01-01_000000_good"].damaged == []
    assert [i.file for i in listed["2024-01-01_000000_good"].images] == ["a.png"]
    for name in DAMAGED_RUNS:
        run = listed[f"2024-01-02_000000_{name}"]
        assert run.damaged and all(isinstance(p, str) for p in run.damaged), name
        assert isinstance(run.prompts, list)
    # a line that is not JSON (30000 brackets, or one cut short by a crash) is skipped, the rest listed
    _run(out, "2024-01-04_000000_deep", {"prompts": ["x"]}, ["[" * 30000 + "]" * 30000, '{"file": "b.pn',
                                                             good_entry()])
    deep = next(run for run in list_runs(out, 100) if run.name == "2024-01-04_000000_deep")
    assert [image.file for image in deep.images] == ["a.png"] and deep.damaged == []


def edited_entry(file: str, index: int, source) -> dict:
    """An image of an edit run whose record names `source` as what it was made from."""
    record = ImageRecord("a cat", 0, index, 1, "tiny", tokens=tuple(range(256)), kept_mask="ff" * 32,
                         source=source if isinstance(source, dict) else None)
    return {**good_entry(file, index), **record.to_metadata(), "source": source}


def test_an_edit_source_is_listed_only_as_an_image_of_a_run_in_the_output_folder(tmp_path):
    from nbkit.server.folders import EditSource, list_runs

    out = tmp_path / "out"
    _run(out, "2024-01-01_000000_source", {"prompts": ["a cat"]}, [good_entry()])
    outside = _run(tmp_path / "elsewhere", "2024-01-01_000000_outside", {"prompts": ["a cat"]},
                   [good_entry()])
    (out / "linked").symlink_to(outside, target_is_directory=True)          # a run that leads out
    (out / "2024-01-01_000000_source" / "b.png").symlink_to(outside / "a.png")  # an image that leads out
    with open(out / "2024-01-01_000000_source" / "manifest.jsonl", "a") as manifest_file:
        manifest_file.write(json.dumps(good_entry("b.png", 1)) + "\n")
    extend = {"tokens_sha256": "0" * 64, "encoded": False, "edit": "extend", "direction": "right", "rows": 4}
    sources = [
        {**extend, "file": "2024-01-01_000000_source/a.png"},                 # the one that is taken
        {**extend, "file": "../out/2024-01-01_000000_source/a.png"},
        {**extend, "file": "../a.png"},
        {**extend, "file": "2024-01-01_000000_source/../a.png"},
        {**extend, "file": f"{outside}/a.png"},
        {**extend, "file": "../elsewhere/2024-01-01_000000_outside/a.png"},
        {**extend, "file": "..\\elsewhere/a.png"},
        {**extend, "file": "linked/a.png"},
        {**extend, "file": "2024-01-01_000000_source/b.png"},
        {**extend, "file": "2024-01-01_000000_source/not-listed.png"},
        {**extend, "file": "no-such-run/a.png"},
        {**extend, "file": "2024-01-01_000000_source/a.png", "direction": "up"},
        {**extend, "file": "2024-01-01_000000_source/a.png", "rows": True},
        {**extend, "file": "2024-01-01_000000_source/a.png", "rows": 99},
        {**extend, "file": "2024-01-01_000000_source/a.png", "edit": "erase"},
        {**extend, "file": ["2024-01-01_000000_source", "a.png"]},
        "2024-01-01_000000_source/a.png",
    ]
    _run(out, "2024-01-02_000000_edit", {"prompts": ["a cat"]},
         [edited_entry(f"{index:03d}.png", index, source) for index, source in enumerate(sources)])
    listed = {run.name: run for run in list_runs(out, 100)}
    images = listed["2024-01-02_000000_edit"].images
    assert [image.file for image in images] == [f"{index:03d}.png" for index in range(len(sources))]
    assert images[0].edited_from == EditSource("2024-01-01_000000_source", "a.png", "extend", "right", 4)
    assert [image.file for image in images if image.edited_from is not None] == ["000.png"]
    assert all(image.edited_from is None for image in listed["2024-01-01_000000_source"].images)


def test_reranking_a_damaged_run_is_a_clear_error(tmp_path):
    from nbkit.output.pictures import rerank_folder

    class NoClip:
        def scores(self, images, prompts):
            raise AssertionError("a damaged run reached CLIP")

    out = tmp_path / "out"
    for name in ("no-prompt-index", "list-values", "prompt-a-dict"):
        folder = _run(out, name, *DAMAGED_RUNS[name])
        with pytest.raises(ValueError, match=f"Run {name} is damaged.*manifest.jsonl line 1"):
            rerank_folder(folder, NoClip())
    bomb = _run(out, "bomb", {"prompts": ["a cat"]}, [good_entry()])
    (bomb / "a.png").write_bytes(png_claiming(1, 100000))
    with pytest.raises(ValueError, match="longer than 32:1"):
        rerank_folder(bomb, NoClip())


# ---- bodies, origins, the run index, leftovers, messages


def test_deep_json_is_a_400_not_a_recursion_error():
    from nbkit.server.protocol import BadInput, parse_body

    for body in (b"[" * 30000 + b"]" * 30000, b'{"a":' * 30000 + b"1" + b"}" * 30000, b"[" * 33 + b"]" * 33):
        with pytest.raises(BadInput) as error:
            parse_body(body)
        assert error.value.status == 400 and error.value.field == "body"
    brackets = b"[" * 40
    assert parse_body(b'{"prompt": "' + brackets + b'\\"[["}')["prompt"].startswith("[[[")   # in a string
    nested = parse_body(b"[" * 32 + b"]" * 32)          # as deep as is taken
    for _ in range(31):
        nested = nested[0]
    assert nested == []


def test_allowing_a_host_to_be_addressed_trusts_no_other_origin():
    from nbkit.server.gate import GateRules, write_allowed

    for allowed in (("*",), (".example",), ("box.example",)):
        rules = GateRules(allow_hosts=allowed, port=8000)
        for origin in ("https://evil.example", "https://box.example", "null", "https://saharmor.github.io.evil"):
            for route in ("/generate", "/api/jobs", "/dalle"):
                assert not write_allowed("POST", origin, None, "localhost:8000", route, rules), \
                    (allowed, origin, route)
        assert write_allowed("POST", "http://localhost:8000", None, "localhost:8000", "/api/jobs", rules)
    rules = GateRules(allow_hosts=("*",), cors_origins=("https://mine.example",), port=8000)
    assert write_allowed("POST", "https://mine.example", None, "localhost:8000", "/api/jobs", rules)


def test_stale_temporary_files_are_swept_and_nothing_else(tmp_path):
    from nbkit.output.atomic import atomic_write, sweep_temporaries

    out = tmp_path / "out"
    run = out / "2024-01-01_000000_run"
    run.mkdir(parents=True)
    elsewhere = tmp_path / ".image.png.abcd1234.tmp"
    deeper = run / "sub"
    deeper.mkdir()
    stale = [out / ".ranking.json.a1b2c3d4.tmp", run / ".000_a_s1_000.png.zz_9x8y7.tmp"]
    kept = [run / ".000_a_s1_000.png.tooshort.tmp2", run / "notes.tmp", run / ".hidden.png",
            deeper / ".x.png.abcdefgh.tmp", elsewhere, run / "image.png"]
    fresh = run / ".fresh.png.qwertyui.tmp"
    for path in (*stale, *kept, fresh):
        path.write_bytes(b"x" * 100)
    link = run / ".link.png.abcdefgh.tmp"
    link.symlink_to(elsewhere)
    hour_ago = time.time() - 7200
    for path in (*stale, *kept):
        os.utime(path, (hour_ago, hour_ago))
    os.utime(link, (hour_ago, hour_ago), follow_symlinks=False)
    assert sorted(sweep_temporaries(out)) == sorted(stale)
    assert all(p.exists() for p in (*kept, fresh)) and link.is_symlink()
    assert not any(p.exists() for p in stale)
    atomic_write(run / "new.png", b"data")     # atomic_write's own name is what is swept
    assert not list(run.glob(".new.png*"))


def test_messages_for_clients_show_paths_inside_the_output_folder_relative_to_it(tmp_path):
    from nbkit.server.folders import for_clients

    out = tmp_path / "out"
    message = (f"FileNotFoundError: {out}/run/.000_x.png.abcdefgh.tmp; {out.resolve()}/run/manifest.jsonl "
               f"lists 'link.png'; /home/someone/.cache/nbkit/model.bin is damaged; see /api/info and "
               f"https://example.com/a/b")
    shown = for_clients(message, out)
    assert str(tmp_path) not in shown and "/home/someone" not in shown
    assert "run/.000_x.png.abcdefgh.tmp" in shown and "run/manifest.jsonl lists 'link.png'" in shown
    assert "model.bin is damaged" in shown and "https://example.com/a/b" in shown


# ---- against a served nbkit


def rss_kib(pid: int, reset_peak: bool = False) -> tuple[int, int]:
    """(resident now, highest resident since the last reset) of a process, in KiB."""
    if reset_peak:
        Path(f"/proc/{pid}/clear_refs").write_text("5")      # VmHWM := VmRSS (Linux, same user)
    status = Path(f"/proc/{pid}/status").read_text()
    found = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
    return int(found["VmRSS"]), int(found["VmHWM"])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from module_server(tmp_path_factory.mktemp("hostile"), "--max-batch", "4", "--max-images", "4",
                             "--max-queue", "8")


def plant_run(out: Path, name: str, files: dict[str, bytes], prompt: str = "a planted run") -> None:
    """A run folder in the server's output folder, as nbkit would have saved it, holding `files`."""
    folder = out / name
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"prompts": [prompt], "created": "2020-01-01"}))
    lines = []
    for index, (file, data) in enumerate(files.items()):
        (folder / file).write_bytes(data)
        lines.append(json.dumps({"file": file, **ImageRecord(prompt, 0, index, 1, "tiny",
                                                             tokens=tuple(range(256))).to_metadata()}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")


def still_answers(server, within: float = 5.0) -> None:
    began = time.monotonic()
    status, _, answer = call(server.url + "api/info", timeout=within)
    assert status == 200 and time.monotonic() - began < within, answer


def test_text_that_is_not_utf8_never_reaches_the_run_list(server):
    url = server.url
    for text in NOT_TEXT:
        body = json.dumps({"prompts": [text], "n_images": 1}).encode()      # \ud800 escaped, as JSON allows
        for path, field in (("api/jobs", "prompts[0]"), ("generate", "text")):
            sent = body if path == "api/jobs" else json.dumps({"text": text}).encode()
            status, _, answer = call(url + path, sent)
            assert status == 400 and answer["field"] == field and "surrogate" in answer["error"], answer
    done = finished(url, submit(url, {"prompt": UNICODE_TROUBLE["combining"][:60], "seed": 3})["id"])
    assert done["state"] == "done"
    status, _, runs = call(url + "api/runs")
    assert status == 200 and all(not run["damaged"] for run in runs["runs"] if run["name"] == done["run"])


def test_deep_json_and_huge_numbers_are_400s_on_every_post(server):
    deep = b"[" * 30000 + b"]" * 30000
    for path in ("api/jobs", "api/rerank", "api/upscale", "generate", "dalle"):
        status, _, answer = call(server.url + path, deep)
        assert status == 400 and answer["field"] == "body", (path, answer)
    for body in ({"prompt": "x", "n_images": 1e308}, {"prompt": "x", "seed": 10**400},
                 {"prompt": "x", "temperature": float("nan")}, {"prompt": "x", "top_k": -(2**70)}):
        status, _, answer = call(server.url + "api/jobs", json.dumps(body).encode())
        assert status == 400 and answer["field"] in body, (body, answer)
    status, _, answer = call(server.url + "api/jobs", b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}")
    assert status == 400 and answer["field"] == "body", answer          # past Python's int digits limit
    still_answers(server)


def test_damaged_runs_do_not_take_the_run_list_down(server):
    out = server.out
    for name, (info, lines) in DAMAGED_RUNS.items():
        _run(out, f"2020-02-02_000000_{name}", info, lines)
    status, _, answer = call(server.url + "api/runs?limit=1000")
    assert status == 200, answer
    damaged = {run["name"]: run["damaged"] for run in answer["runs"]}
    assert all(damaged[f"2020-02-02_000000_{name}"] for name in DAMAGED_RUNS)
    for name in ("no-prompt-index", "list-values"):
        status, _, answer = call(server.url + "api/rerank", {"run": f"2020-02-02_000000_{name}"})
        assert status == 400 and answer["field"] == "run" and "damaged" in answer["error"], answer
        assert str(out) not in answer["error"]


def test_hostile_images_in_a_run_are_4xx_on_every_route_and_memory_comes_back(server):
    out, url = server.out, server.url
    files = {name: path.read_bytes() for name, path in refused_files(out.parent).items()}
    files["bomb"] = png_claiming(13000, 13000, compressed_zeros=True)          # ~500 KB, 507 MB decoded
    files["bomb-16bit"] = png_claiming(9000, 9000, 16, 6, compressed_zeros=True)
    with_metadata = {f"{name}.png": data for name, data in files.items()}
    big = saved_like_nbkit(Image.fromarray(np.zeros((2100, 2100, 3), np.uint8)))   # over the upscaler's limit
    for name, data in {**with_metadata, "over-upscale-limit.png": big}.items():
        plant_run(out, f"2020-03-03_000000_{name[:-4]}", {name: data})
    before_now, before_peak = rss_kib(server.process.pid, reset_peak=True)
    answers = {}
    for name in with_metadata:
        run = f"2020-03-03_000000_{name[:-4]}"
        for path, body in (("api/jobs", {"vary": {"image": f"{run}/{name}"}, "prompt": "x"}),
                           ("api/jobs", {"extend": {"image": f"{run}/{name}", "direction": "right",
                                                    "rows": 4}, "prompt": "x"}),
                           ("api/upscale", {"run": run, "file": name}), ("api/rerank", {"run": run})):
            status, _, answer = call(url + path, body, timeout=120)
            answers[name, path, next(iter(body))] = (status, answer)
            assert 400 <= status < 500 and answer.get("error"), (name, path, answer)
            assert "\n" not in answer["error"] and str(out) not in answer["error"], answer
        still_answers(server)
    after_now, after_peak = rss_kib(server.process.pid)
    # what the bombs would cost decoded: 13000²·3 = 507 MB, 9000²·8 = 648 MB; CLIP's 224×22,400,000: 15 GB
    assert after_peak - before_peak < 300 * 1024, (before_peak, after_peak)
    assert after_now - before_now < 300 * 1024, (before_now, after_now)
    print(f"server RSS {before_now // 1024} → {after_now // 1024} MiB, peak {before_peak // 1024} → "
          f"{after_peak // 1024} MiB over {len(answers)} hostile requests")
    status, _, upscaled = call(url + "api/upscale", {"run": "2020-03-03_000000_over-upscale-limit",
                                                     "file": "over-upscale-limit.png"})
    assert status == 400 and "4,194,304" in upscaled["error"]                 # checked before it is queued


def test_a_run_folder_deleted_while_serving_is_made_again(server):
    import shutil

    body = {"prompt": "deleted while serving", "seed": 11, "n_images": 1}
    first = finished(server.url, submit(server.url, body)["id"])
    assert first["state"] == "done"
    wait_for(lambda: list((server.out / first["run"]).glob("*_grid.png")))     # the job's last write
    shutil.rmtree(server.out / first["run"])
    again = finished(server.url, submit(server.url, body)["id"])
    assert again["state"] == "done", again
    assert (server.out / again["run"] / again["images"][0]["file"]).is_file()
    assert len(manifest(server.out, again["run"])) == 1


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_slow_clients_are_cut_off_and_others_are_answered(server):
    from nbkit.limits import BODY_TIMEOUT_S, HEADER_TIMEOUT_S, MAX_CONNECTIONS

    port = int(server.url.split(":")[2].split("/")[0])
    held = []
    try:
        slow_body = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow_body.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json"
                          b"\r\nContent-Length: 1000\r\n\r\n{\"prompt\": " % port)
        began = time.monotonic()
        for count in range(MAX_CONNECTIONS - 1):            # every other place held by a client that stalls
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if count % 2:
                sock.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Slow: " % port)
            held.append(sock)
        status, _, answer = call(server.url + "api/info", timeout=10)
        assert status == 503, answer                         # the cap: a clear answer at once, not a hang
        slow_body.settimeout(BODY_TIMEOUT_S + 10)
        assert slow_body.recv(4096).startswith(b"HTTP/1.1 408")
        wait_for(lambda: all(_closed_by_server(sock) for sock in held), HEADER_TIMEOUT_S + 15, every=0.5)
        assert time.monotonic() - began < max(HEADER_TIMEOUT_S, BODY_TIMEOUT_S) + 15
        still_answers(server)
    finally:
        for sock in held:
            sock.close()
        slow_body.close()


def test_nothing_saved_is_lost_or_half_listed(server):
    status, _, answer = call(server.url + "api/runs?limit=1000")
    assert status == 200
    for run in answer["runs"]:
        for image in run["images"]:
            assert (server.out / run["name"] / image["file"]).is_file(), image
    assert raw_call(server.url, "GET", "/api/info", headers={"Host": "127.0.0.1:1"})[0] == 421


# ---- the page that states the limits


def test_the_security_page_states_the_limits_in_the_code():
    from nbkit import limits
    from nbkit.generation.upscale import TileSettings
    from nbkit.server.options import ServerOptions

    page = (ROOT / "docs" / "security.md").read_text()
    numbers = {name: value for name, value in vars(limits).items() if name.isupper()}
    assert len(numbers) >= 11
    for name, value in numbers.items():
        shown = ", ".join(value) if isinstance(value, tuple) else f"{value:g}" if isinstance(value, float) \
            else str(value)
        assert re.search(rf"{re.escape(shown)}( s)?[ ,(|]", page) and f"`{name}`" in page, (name, shown)
    assert TileSettings().max_pixels == limits.MAX_SOURCE_PIXELS
    assert ServerOptions(out=Path(".")).max_body_bytes == limits.MAX_BODY_BYTES
