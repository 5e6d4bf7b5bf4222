"""A saved PNG made again from its metadata and compared with the file (`nbkit.output.reproduction`)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import assert_pixels_within_one_level, tiny_pipeline
from PIL import Image

from nbkit.generation.pipeline import Pipeline
from nbkit.generation.request import GenerationRequest
from nbkit.generation.stream import collect
from nbkit.output import runs
from nbkit.output.reproduction import reproduce
from nbkit.png import png_bytes, read_png_metadata
from tests.output.test_runs import PROMPTS, generate


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(max_batch=2)


def test_a_crafted_record_cannot_make_reproduce_enumerate(pipe, tmp_path):
    """A record names one image; reproduce makes that image alone, whatever its indexes, and indexes
    past any run are refused at once."""
    from nbkit.generation.request import ImageTask
    from nbkit.generation.sampling import SamplingSettings

    task = ImageTask("a red cube", 3, prompt_index=70_000, image_index=900)
    events = pipe.stream_tasks([task], SamplingSettings())
    image = collect(events).images[0]
    far = GenerationRequest([" "], 1, 3)            # the settings of a plain request
    record = runs.record_of(image, pipe.name, far)
    png = tmp_path / "far.png"
    png.write_bytes(png_bytes(image.pixels, record.to_metadata()))
    made = reproduce(pipe, png)
    assert made.tokens_match and made.pixels_differing == 0 and made.image.prompt_index == 70_000
    metadata = record.to_metadata()
    for name in ("prompt_index", "image_index"):
        crafted = tmp_path / f"{name}.png"
        crafted.write_bytes(png_bytes(image.pixels, {**metadata, name: 2**31}))
        with pytest.raises(ValueError, match=f"{name} must be a whole number in \\[0, 1048576\\)"):
            reproduce(pipe, crafted)


def test_a_saved_png_reproduces_its_image(pipe, tmp_path):
    folder, generation = generate(pipe, PROMPTS, tmp_path, n_images=2, seed=21, top_k=8)
    target = next(e for e in folder.entries() if e["prompt_index"] == 1 and e["image_index"] == 1)
    again = reproduce(pipe, folder.path / target["file"]).check().image
    assert (again.prompt_index, again.image_index, again.seed) == (1, 1, 21)
    assert again.tokens.tolist() == target["tokens"]
    # Made alone, not in its batch of four: the README's contract, pixels within one level in few values.
    assert_pixels_within_one_level(again.pixels, np.asarray(Image.open(folder.path / target["file"])))


def test_a_png_records_its_batch_shape_and_one_saved_before_that_still_reproduces(pipe, tmp_path):
    """Each PNG names the batch shape it was drawn in and its row, and reproduce draws it there (what half
    precision needs, tests/test_reproduce_dtypes.py); a PNG without them (saved by an older nbkit) is drawn
    alone, as before — float32's contract, the same tokens in any shape. A crafted shape is refused."""
    folder, _ = generate(pipe, PROMPTS, tmp_path, n_images=3, seed=23)    # 6 in 2s
    entries = sorted(folder.entries(), key=lambda e: (e["prompt_index"], e["image_index"]))
    assert [(e["batch_size"], e["batch_row"]) for e in entries] == [(2, r) for r in (0, 1, 0, 1, 0, 1)]
    png = folder.image_path(entries[3])
    metadata = read_png_metadata(png)
    assert (metadata["batch_size"], metadata["batch_row"], metadata["dtype"]) == (2, 1, "float32")
    made = reproduce(pipe, png)
    assert made.tokens_match and (made.image.batch_size, made.image.batch_row) == (2, 1)
    assert made.pixels_differing == 0                     # the same shape and row: the same decode too
    old = tmp_path / "old.png"
    metadata = {k: v for k, v in metadata.items() if k not in ("batch_size", "batch_row")}
    old.write_bytes(png_bytes(np.asarray(Image.open(png)), metadata))
    made = reproduce(pipe, old)
    assert made.matches and (made.image.batch_size, made.image.batch_row) == (1, 0)
    for size, row in [(0, 0), (4, 4), (4, -1), (2**20, 0), ("4", 0), (4, None), (True, 0)]:
        crafted = tmp_path / "crafted.png"
        crafted.write_bytes(png_bytes(np.asarray(Image.open(png)), {**metadata, "batch_size": size,
                                                                    "batch_row": row}))
        with pytest.raises(ValueError, match="batch_size must be a whole number from 1 to 1024"):
            reproduce(pipe, crafted)
    crafted.write_bytes(png_bytes(np.asarray(Image.open(png)), {**metadata, "dtype": "float8"}))
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16, float16"):
        reproduce(pipe, crafted)
    tokens = [(token + 1) % 64 for token in metadata["tokens"]]      # other tokens, said to be bfloat16's
    crafted.write_bytes(png_bytes(np.asarray(Image.open(png)), {**metadata, "dtype": "bfloat16",
                                                                "tokens": tokens}))
    with pytest.raises(ValueError, match="made in bfloat16, and this pipeline runs float32 .*bfloat16"):
        reproduce(pipe, crafted).check()


def test_reproduce_refuses_another_model_and_checks_the_tokens(pipe, tmp_path):
    folder, _ = generate(pipe, PROMPTS[:1], tmp_path, n_images=1, seed=6)
    png = folder.image_path(folder.entries()[0])
    other = Pipeline(pipe.model, pipe.params, pipe.tokenizer, pipe.vqgan, pipe.vqgan_params, pipe.mesh,
                     name="mega")
    with pytest.raises(ValueError, match="made with the model .* but this pipeline runs 'mega'"):
        reproduce(other, png)
    metadata = read_png_metadata(png)
    metadata["tokens"] = [(t + 1) % 64 for t in metadata["tokens"][:10]] + metadata["tokens"][10:]
    tampered = tmp_path / "tampered.png"
    tampered.write_bytes(png_bytes(np.asarray(Image.open(png)), metadata))
    with pytest.raises(ValueError, match="differs from the recorded one in 10 of 256 tokens"):
        reproduce(pipe, tampered).check()


def test_reproduce_uses_the_recorded_prng_setting(pipe, tmp_path):
    """An image made under the other threefry setting (jax's default changed in 0.5) is made again."""
    before = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", not before)
    try:
        folder, _ = generate(pipe, PROMPTS[:1], tmp_path, n_images=1, seed=13)
    finally:
        jax.config.update("jax_threefry_partitionable", before)
    png = folder.image_path(folder.entries()[0])
    assert read_png_metadata(png)["jax_threefry_partitionable"] is (not before)
    again = reproduce(pipe, png).check()
    assert again.tokens.tolist() == folder.entries()[0]["tokens"]
    assert jax.config.jax_threefry_partitionable is before                    # and the setting is restored
