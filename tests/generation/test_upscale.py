"""The upscaling step (lazy weights, one program per window shape, tiles with blended overlaps, alpha),
upscaled PNGs beside their source and made again, pictures from outside, `nbkit upscale`, and the
release downloads."""

import hashlib
import http.server
import threading
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import golden_folder
from PIL import Image

from nbkit.generation.upscale import TileSettings, UpscaleError, Upscaler, blend_weights, window_starts
from nbkit.output.reproduction import reproduce
from nbkit.output.upscaled import read_picture, save_upscaled, upscale_files
from nbkit.png import png_bytes, read_png_metadata

# uint8 results may differ by one level where float sums run in another order (tiles, devices).
ONE_LEVEL = 1


def _weights(kind: str = "x4") -> Path:
    return golden_folder("esrgan").parent / f"esrgan-tiny-{kind}" / "model.safetensors"


def _picture(height: int, width: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """A smooth gradient with noise: structure at every scale, like a photo."""
    rows, columns = np.mgrid[0:height, 0:width]
    base = np.stack([columns * 0.7, rows * 1.3, (rows + columns) * 0.5, rows * 0 + 160][:channels], -1)
    noise = np.random.default_rng(seed).normal(0, 12, base.shape)
    return np.clip(base % 256 + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def upscaler():
    return Upscaler(_weights(), dtype=jnp.float32)


def test_weights_are_read_only_when_something_is_upscaled():
    upscaler = Upscaler(_weights(), dtype=jnp.float32)
    assert not upscaler.loaded and upscaler.weights_sha256 is None
    upscaler.upscale([_picture(8, 8)])
    assert upscaler.loaded
    assert upscaler.weights_sha256 == hashlib.sha256(_weights().read_bytes()).hexdigest()


def test_every_256_picture_runs_the_same_program(upscaler, count_compilations):
    upscaler.upscale([_picture(256, 256, seed=1)])
    with count_compilations() as counter:
        for seed in (2, 3):
            out = upscaler.upscale([_picture(256, 256, seed=seed)])[0]
            assert out.shape == (1024, 1024, 3)
    assert counter.count == 0


def test_windows_cover_the_picture_and_blend_weights_sum_to_one():
    for length in (100, 256, 257, 700, 2048):
        starts = window_starts(length, 256, 32)
        window = min(length, 256)
        assert starts[0] == 0 and starts[-1] + window == length
        assert all(b - a <= 256 - 32 for a, b in zip(starts, starts[1:], strict=False))
        total = np.zeros(length * 4)
        for start, weight in zip(starts, blend_weights(starts, window, 4), strict=True):
            total[start * 4:(start + window) * 4] += weight
        np.testing.assert_allclose(total, 1, atol=1e-6)


def test_a_panorama_is_upscaled_in_tiles_without_a_seam(upscaler, count_compilations):
    """Tiled (64-pixel windows) and untiled runs of a 64×512 strip give the same pixels within the float
    noise of one level, at the cuts too; a 256×2048 panorama goes through in 256×256 windows with no
    new program beyond its batch size, with no step in the pixels where its windows meet."""
    panorama = _picture(64, 512, seed=4)
    tiled = Upscaler(_weights(), dtype=jnp.float32, settings=TileSettings(tile=64, overlap=16))
    untiled = Upscaler(_weights(), dtype=jnp.float32, settings=TileSettings(tile=512))
    whole = untiled.upscale([panorama])[0]
    in_tiles = tiled.upscale([panorama])[0]
    assert in_tiles.shape == whole.shape == (256, 2048, 3)
    assert np.abs(in_tiles.astype(int) - whole).max() <= ONE_LEVEL

    big = _picture(256, 2048, seed=5)
    upscaler.upscale([big[:, :256]])
    with count_compilations() as counter:
        out = upscaler.upscale([big])[0]
    assert out.shape == (1024, 8192, 3)
    assert counter.count <= 1   # at most the batch of 4 windows; the 256×256 window shape is known
    # No step across the windows' edges: where a window ends or begins, the change from one output column
    # to the next is like its neighbours' (a hard cut, overlap 0, makes it 10-17 times theirs here).
    steps = np.abs(np.diff(out.astype(np.int16), axis=1)).mean(axis=(0, 2))
    starts = window_starts(2048, 256, 32)
    edges = sorted({4 * s for s in starts[1:]} | {4 * (s + 256) for s in starts[:-1]})
    assert len(edges) == 2 * (len(starts) - 1)
    for edge in edges:
        assert steps[edge - 1] <= 2 * np.median(steps[edge - 17:edge + 16]), edge


def test_too_large_pictures_are_refused_naming_the_limit():
    small = Upscaler(_weights(), dtype=jnp.float32, settings=TileSettings(max_pixels=100 * 100))
    with pytest.raises(UpscaleError, match=r"at most 10,000 \(TileSettings.max_pixels"):
        small.upscale([_picture(101, 100)])


def test_alpha_is_upscaled_and_kept(upscaler):
    rgba = _picture(16, 24, seed=6, channels=4)
    rgba[..., 3] = np.linspace(0, 255, 24).astype(np.uint8)[None, :]
    out = upscaler.upscale([rgba])[0]
    assert out.shape == (64, 96, 4)
    grey = np.repeat(rgba[..., 3:], 3, axis=-1)
    expected = upscaler.upscale([grey])[0].astype(int).mean(axis=-1)
    assert np.abs(out[..., 3] - expected).max() <= ONE_LEVEL + 0.5
    np.testing.assert_array_equal(out[..., :3], upscaler.upscale([rgba[..., :3]])[0])


def test_the_x2_model_needs_even_sides():
    x2 = Upscaler(_weights("x2"), dtype=jnp.float32)
    assert x2.upscale([_picture(10, 12)])[0].shape == (20, 24, 3)
    with pytest.raises(UpscaleError, match="divisible by 2"):
        x2.upscale([_picture(11, 12)])


def test_wrong_arrays_are_refused_in_one_line(upscaler):
    with pytest.raises(UpscaleError, match=r"uint8 array of shape \(height, width, 3 or 4\)"):
        upscaler.upscale([np.zeros((8, 8), np.uint8)])


# ---- pictures from outside


def _save(path: Path, image: Image.Image) -> Path:
    image.save(path)
    return path


def test_greyscale_16bit_and_palette_pngs_are_read(tmp_path):
    grey = _picture(8, 8)[..., 0]
    picture = read_picture(_save(tmp_path / "grey.png", Image.fromarray(grey, "L")))
    assert picture.grey and picture.pixels.shape == (8, 8, 3)
    np.testing.assert_array_equal(picture.pixels[..., 1], grey)

    deep = (grey.astype(np.uint16) * 257)
    deep_image = Image.fromarray(deep)
    assert deep_image.mode.startswith("I;16")
    picture = read_picture(_save(tmp_path / "deep.png", deep_image))
    assert picture.grey
    np.testing.assert_array_equal(picture.pixels[..., 0], grey)

    palette = Image.fromarray(_picture(8, 8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    picture = read_picture(_save(tmp_path / "palette.png", palette))
    assert picture.pixels.shape[2] in (3, 4) and not picture.grey

    rgba = _picture(8, 8, channels=4)
    rgba[0, 0, 3] = 0
    picture = read_picture(_save(tmp_path / "alpha.png", Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(picture.pixels, rgba)


def test_files_that_are_not_images_are_one_line_errors(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    whole = png_bytes(_picture(64, 64))
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(whole[: len(whole) // 2])
    for path in (text, truncated):
        with pytest.raises(UpscaleError, match="is not a readable image") as error:
            read_picture(path)
        assert "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="No image at"):
        read_picture(tmp_path / "missing.png")


# ---- saved beside the source, made again


def _nbkit_png(folder: Path) -> Path:
    metadata = {"prompt": "a lighthouse", "seed": 7, "tokens": list(range(256))}
    path = folder / "lighthouse.png"
    path.write_bytes(png_bytes(_picture(32, 32, seed=8), metadata))
    return path


def test_an_upscaled_png_names_its_source_and_upscaler_and_is_made_again(tmp_path, upscaler):
    source = _nbkit_png(tmp_path)
    original = source.read_bytes()
    saved = save_upscaled(upscaler, source)
    assert saved.parent == tmp_path and saved != source and source.read_bytes() == original
    metadata = read_png_metadata(saved)
    tokens_hash = hashlib.sha256(np.arange(256, dtype="<i4").tobytes()).hexdigest()
    assert metadata["upscaled_from"] == {"file": "lighthouse.png", "tokens_sha256": tokens_hash,
                                         "sha256": hashlib.sha256(original).hexdigest()}
    assert metadata["upscaler"]["sha256"] == upscaler.weights_sha256 and metadata["upscaler"]["scale"] == 4
    assert metadata["prompt"] == "a lighthouse" and "tokens" not in metadata
    with Image.open(saved) as image:
        assert image.size == (128, 128)

    files = set(tmp_path.iterdir())
    assert save_upscaled(upscaler, source) == saved      # already made: the saved file is the answer
    assert set(tmp_path.iterdir()) == files

    again = reproduce(None, saved, upscaler=upscaler)
    assert again.kind == "upscaled" and again.matches and again.most_levels <= ONE_LEVEL
    source.write_bytes(png_bytes(_picture(32, 32, seed=9)))
    with pytest.raises(ValueError, match="is not the file"):
        reproduce(None, saved, upscaler=upscaler)


def test_greyscale_pictures_are_saved_greyscale_into_another_folder(tmp_path, upscaler):
    source = _save(tmp_path / "grey.png", Image.fromarray(_picture(8, 8)[..., 0], "L"))
    out = tmp_path / "big"
    [saved] = upscale_files(upscaler, [source], out)
    assert saved.parent == out
    with Image.open(saved) as image:
        assert image.mode == "L" and image.size == (32, 32)


def test_nbkit_upscale_command(tmp_path, capsys):
    from nbkit.cli import main

    source = _nbkit_png(tmp_path)
    assert main(["upscale", str(source), "--model", str(_weights("compact"))]) == 0
    saved = Path(capsys.readouterr().out.strip())
    assert saved.parent == tmp_path and read_png_metadata(saved)["upscaled_from"]["file"] == source.name
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    assert main(["upscale", str(bad), "--model", str(_weights("compact"))]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("nbkit: error: bad.png is not a readable image") and "\n" not in error


# ---- downloads


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def release_server(tmp_path, monkeypatch):
    """Release assets served from 127.0.0.1 in GitHub's layout (`<tag>/<file>`)."""
    root = tmp_path / "served"
    (root / "v1").mkdir(parents=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             lambda *a: _Files(*a, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("NBKIT_RELEASES_URL", f"http://127.0.0.1:{server.server_port}")
    yield root / "v1"
    server.shutdown()
    thread.join()


def _register(monkeypatch, data: bytes):
    from nbkit.weights import registry

    model = registry._esrgan("esrgan-test", "test", "general-x4v3", "v1", "model.pth",
                             hashlib.sha256(data).hexdigest(), len(data), len(data))
    monkeypatch.setitem(registry.MODELS, "esrgan-test", model)


def test_registered_upscalers_download_once_with_their_hash_checked(release_server, tmp_path, monkeypatch):
    from nbkit.weights import hub

    data = _weights("compact").with_name("model.pth").read_bytes()
    (release_server / "model.pth").write_bytes(data)
    _register(monkeypatch, data)
    cache = tmp_path / "cache"
    path = hub.fetch_upscaler("esrgan-test", cache, progress=False)
    assert path.read_bytes() == data and path.is_relative_to(cache / "releases" / "esrgan-test")
    monkeypatch.setenv("NBKIT_OFFLINE", "1")
    assert hub.fetch_upscaler("esrgan-test", cache, progress=False) == path
    assert any(source == "esrgan-test" for source, _, _ in hub.cached_models(cache))

    monkeypatch.delenv("NBKIT_OFFLINE")
    (release_server / "model.pth").write_bytes(data[::-1])
    with pytest.raises(hub.CorruptFileError, match="does not match"):
        hub.fetch_upscaler("esrgan-test", tmp_path / "other-cache", progress=False)
    with pytest.raises(hub.ModelUnavailableError, match="not an upscaler"):
        hub.fetch_upscaler("mini", cache)


def test_info_lists_the_upscalers_with_license_and_size():
    from nbkit.weights.registry import upscalers_summary

    text = upscalers_summary()
    for name in ("esrgan-x4", "esrgan-anime", "esrgan-x2", "esrgan-fast"):
        assert name in text
    assert text.count("BSD-3-Clause") == 4 and "67.0 MB" in text


def test_batches_are_sharded_over_devices_with_the_same_pixels(eight_devices):
    """Eight CPU devices (the session's 8-device process, tests/eight_devices_run.py): five pictures in one
    call give what one device gives."""
    from tests.eight_devices_run import upscale_pictures

    assert eight_devices.results["device_count"] == 8 and eight_devices.results["platform"] == "cpu"
    single = np.stack(Upscaler(_weights(), dtype=jnp.float32).upscale(upscale_pictures()))
    sharded = np.load(eight_devices.folder / "upscaled.npy")
    assert sharded.shape == single.shape
    assert np.abs(sharded.astype(int) - single).max() <= ONE_LEVEL
