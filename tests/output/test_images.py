import inspect
import io
import re

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image, ImageFont

from nbkit.output.images import CAPTION_MARGIN, make_grid
from nbkit.png import png_bytes, read_png_metadata

H, W = 24, 40  # not square, so a transposed tile would show


def random_images(count, height=H, width=W, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.parametrize("count, columns, size", [(1, None, (W, H)), (4, None, (2 * W, 2 * H)),
                                                  (5, None, (3 * W, 2 * H)), (5, 2, (2 * W, 3 * H)),
                                                  (3, 10, (3 * W, H))])
def test_grid_size_and_tiles_are_the_images(count, columns, size):
    images = random_images(count)
    grid = make_grid(images, columns=columns)
    assert grid.size == size and grid.mode == "RGB"
    pixels = np.asarray(grid)
    per_row = size[0] // W
    for i, image in enumerate(images):
        row, column = divmod(i, per_row)
        np.testing.assert_array_equal(pixels[row * H:(row + 1) * H, column * W:(column + 1) * W], image)
    if count == 5 and columns is None:  # the 6th cell is empty: white
        assert (pixels[H:, 2 * W:] == 255).all()


def test_grid_accepts_a_batch_array():
    batch = np.stack(random_images(4))
    np.testing.assert_array_equal(np.asarray(make_grid(batch))[:H, W:], batch[1])


def test_caption_band_under_the_grid():
    images = random_images(4, 256, 256)
    plain = make_grid(images)
    short = make_grid(images, caption="an armchair in the shape of an avocado")
    long = make_grid(images, caption=" ".join(["a red fox jumping over a lazy dog"] * 16)[:500])
    assert short.width == long.width == plain.width
    line = short.height - plain.height - 2 * CAPTION_MARGIN       # the short caption takes one line
    lines, rest = divmod(long.height - plain.height - 2 * CAPTION_MARGIN, line)
    assert line > 0 and rest == 0 and lines >= 5                  # ~4,000 px of text, 496 px a line
    np.testing.assert_array_equal(np.asarray(short)[:plain.height], np.asarray(plain))  # grid untouched
    band = np.asarray(short)[plain.height:]
    assert (band == 255).mean() > 0.8  # mostly white ...
    assert (band < 100).any()  # ... with dark text on it


@pytest.mark.parametrize("caption", ["🦄🦄 日本語の文章 Ünïcödé \u202e عربى", "\x00\x01\ud800 x", "x" * 500,
                                     "word " * 100, "line\nbreaks\tand tabs", "   "])
def test_any_caption_is_drawn_without_error(caption):
    images = random_images(2, 64, 64)
    grid = make_grid(images, caption=caption)
    assert grid.width == 128
    np.testing.assert_array_equal(np.asarray(grid)[:64, 64:], images[1])
    if caption.strip():
        assert grid.height > 64


@pytest.mark.parametrize("images, message", [
    ([], "at least one image"),
    (random_images(1) + random_images(1, H + 1, W), "same size"),
    ([np.zeros((H, W, 3), np.float32)], "uint8"),
    ([np.zeros((H, W), np.uint8)], r"\(height, width, 3\)"),
    ([np.zeros((H, W, 4), np.uint8)], r"\(height, width, 3\)"),
    ([Image.new("RGB", (W, H))], "uint8"),
])
def test_grid_errors_say_what_is_wrong(images, message):
    with pytest.raises(ValueError, match=message):
        make_grid(images)


@pytest.mark.parametrize("columns", [0, -1, 1.5, True])
def test_grid_rejects_bad_columns(columns):
    with pytest.raises(ValueError, match="columns"):
        make_grid(random_images(2), columns=columns)


METADATA = {
    "prompt": "un fauteuil 🥑 « avocat » 日本",
    "seed": 7,
    "temperature": 0.1 + 0.2,
    "top_k": None,
    "scale": 10.0,
    "settings": {"top_p": 0.9, "nested": {"list": [1, 2.5, None, "x"]}},
    "flag": True,
}


def test_png_metadata_round_trips_exactly(tmp_path):
    image = random_images(1)[0]
    data = png_bytes(image, METADATA)
    path = tmp_path / "image.png"
    path.write_bytes(data)
    for source in (data, path, str(path)):
        metadata = read_png_metadata(source)
        assert metadata == METADATA
        assert type(metadata["seed"]) is int and type(metadata["scale"]) is float
        assert metadata["temperature"] == 0.30000000000000004
        assert metadata["top_k"] is None and metadata["flag"] is True
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)


def test_png_text_is_readable_with_plain_pillow():
    text = Image.open(io.BytesIO(png_bytes(random_images(1)[0], METADATA))).text
    assert text["prompt"] == METADATA["prompt"]  # strings as they are
    assert text["seed"] == "7" and text["top_k"] == "null"  # other values as JSON
    assert text["settings"] == '{"top_p": 0.9, "nested": {"list": [1, 2.5, null, "x"]}}'
    assert set(text) == set(METADATA) | {"nbkit"}


def test_png_bytes_from_a_pil_image_and_without_metadata():
    image = make_grid(random_images(2), caption="a cat")
    decoded = Image.open(io.BytesIO(png_bytes(image)))
    assert decoded.size == image.size and "nbkit" not in decoded.text
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(image))


@pytest.mark.parametrize("metadata, message", [({"nbkit": 1}, "keyword"), ({"": 1}, "keyword"),
                                               ({" padded": 1}, "keyword"), ({"x" * 80: 1}, "keyword"),
                                               ({"seed": np.int64(3)}, "JSON"), ({"s": {1, 2}}, "JSON")])
def test_png_bytes_rejects_metadata_it_cannot_store(metadata, message):
    with pytest.raises(ValueError, match=message):
        png_bytes(random_images(1)[0], metadata)


def test_read_metadata_of_a_plain_png_names_the_file(tmp_path):
    path = tmp_path / "plain.png"
    Image.fromarray(random_images(1)[0]).save(path)
    with pytest.raises(ValueError, match="plain.png.*no 'nbkit' metadata"):
        read_png_metadata(path)
    (tmp_path / "fake.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="fake.png"):
        read_png_metadata(tmp_path / "fake.png")
    with pytest.raises(FileNotFoundError):
        read_png_metadata(tmp_path / "missing.png")


def test_the_pillow_pin_has_the_sized_default_font_that_captions_use():
    """`ImageFont.load_default(size=...)` came with Pillow 10.1: an older Pillow allowed by the pin would
    fail on the first caption."""
    assert "size" in inspect.signature(ImageFont.load_default).parameters
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf8")
    pins = re.findall(r'"pillow\s*>=\s*([\d.]+)', pyproject, flags=re.IGNORECASE)
    assert len(pins) == 1, pins
    assert tuple(int(part) for part in pins[0].split(".")) >= (10, 1)
