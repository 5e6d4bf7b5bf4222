"""Few-row products (the CPU's multiply-and-sum form) and weights stored as bfloat16 / int8: the math, the
loader, and the option as users meet it (records, reproduction)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import golden_folder, max_magnitude, tiny_pipeline
from PIL import Image

from nbkit.generation.pipeline import Pipeline
from nbkit.generation.sampling import SamplingSettings, sample_image_tokens
from nbkit.generation.specs import Generate
from nbkit.models.dallebart import FEW_ROWS, DalleBart, Dense, few_row_product
from nbkit.output.records import ImageRecord
from nbkit.output.reproduction import reproduce
from nbkit.output.runs import save_run
from nbkit.png import png_bytes, read_png_metadata
from nbkit.text.tokenizer import PromptTokenizer
from nbkit.weights.loaders import load_dallebart
from nbkit.weights.stored import (
    KERNEL_SCALE,
    STORAGES,
    choose_storage,
    quantize_int8,
    storage_for_host,
    storage_of,
    store_weights,
)

EPS32 = float(jnp.finfo(jnp.float32).eps)


def _worst_case(x, kernel):
    """A float32 sum of n products is off by at most n · eps · Σ|x·k| (every order of summation)."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    return x.shape[-1] * EPS32 * (np.abs(x) @ np.abs(kernel).T)


@pytest.mark.parametrize("rows", [1, 8, FEW_ROWS, FEW_ROWS + 1])
def test_few_row_product_is_the_matrix_product_for_few_and_many_rows(rows):
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(rows), (rows, 1, 96)))
    kernel = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (40, 96)))
    y = np.asarray(jax.jit(few_row_product)(x, kernel))
    assert y.shape == (rows, 1, 40) and y.dtype == np.float32
    exact = np.asarray(x, np.float64) @ np.asarray(kernel, np.float64).T
    assert np.all(np.abs(y - exact) <= _worst_case(x, kernel))


def test_int8_kernels_are_within_half_a_step_of_their_channel_and_dense_applies_the_scale():
    kernel = jax.random.normal(jax.random.PRNGKey(2), (24, 64)).at[3].set(0.0)   # an all-zero channel
    q, scale = quantize_int8(kernel)
    assert q.dtype == jnp.int8 and scale.shape == (24,) and np.all(np.abs(np.asarray(q)) <= 127)
    widened = np.asarray(q, np.float32) * np.asarray(scale)[:, None]
    assert np.all(np.abs(widened - np.asarray(kernel)) <= np.asarray(scale)[:, None] / 2 * (1 + 1e-6))
    assert np.all(widened[3] == 0)

    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (4, 1, 64)))
    y = Dense(24).apply({"params": {"kernel": q, "kernel_scale": scale}}, x)
    exact = np.asarray(x, np.float64) @ widened.astype(np.float64).T
    assert np.all(np.abs(np.asarray(y) - exact) <= 2 * _worst_case(x, widened))


def _golden_logits(params):
    folder = golden_folder("dallebart")
    expected = np.load(folder / "expected.npz", allow_pickle=True)
    model, _ = load_dallebart(folder)
    return np.asarray(model.apply({"params": params}, expected["input_ids"], expected["attention_mask"],
                                  expected["decoder_input_ids"]))


BF16_EPS = float(jnp.finfo(jnp.bfloat16).eps)


@pytest.mark.parametrize("storage, step", [("bfloat16", BF16_EPS), ("int8", 2 / 254)])
def test_stored_weights_move_the_golden_logits_by_no_more_than_their_rounding(storage, step):
    """Rounding each weight by at most `step` of its size (bfloat16) or of its channel's largest
    weight (int8) moves the logits as computing in that precision would: conftest.rounding_bound."""
    _, params = load_dallebart(golden_folder("dallebart"))
    stored = store_weights(params, storage)
    kernels = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(stored)[0]
               if jax.tree_util.keystr(path).endswith("['kernel']")]
    assert kernels and all(k.dtype == (jnp.bfloat16 if storage == "bfloat16" else jnp.int8) for k in kernels)
    reference, logits = _golden_logits(params), _golden_logits(stored)
    assert not np.array_equal(reference, logits)          # the weights were rounded
    bound = math.sqrt(len(kernels)) * step * max_magnitude(reference)
    assert np.abs(logits - reference).max() <= bound


def test_sampling_runs_on_stored_weights_and_unknown_storage_says_what_exists():
    folder = golden_folder("dallebart")
    model, params = load_dallebart(folder)
    prompts = PromptTokenizer.from_folder(folder, max_length=model.config.max_text_length)(["a red cube"])
    tokens = sample_image_tokens(model, store_weights(params, "int8"), prompts, jax.random.PRNGKey(0),
                                 SamplingSettings(), codebook_size=model.config.image_vocab_size)
    assert tokens.shape == (1, model.config.image_length)
    assert np.all((np.asarray(tokens) >= 0) & (np.asarray(tokens) < model.config.image_vocab_size))
    with pytest.raises(ValueError, match="float32, bfloat16, int8"):
        store_weights(params, "fp8")
    assert storage_for_host("bfloat16", width=64, repeats=1) in ("bfloat16", "float32")
    assert isinstance(model, DalleBart)


# ---- the storage as users choose it: loading, records, reproduction


@pytest.mark.parametrize("storage", ["bfloat16", "int8"])
def test_loading_stores_each_kernel_as_store_weights_does(storage):
    """`load_dallebart(weight_storage=)` stores each kernel as it is read (no float32 copy of the model),
    into the very tree `store_weights` makes of the float32 one; `storage_of` reads the storage back."""
    folder = golden_folder("dallebart")
    _, params = load_dallebart(folder)
    _, loaded = load_dallebart(folder, weight_storage=storage)
    expected = dict(jax.tree_util.tree_flatten_with_path(store_weights(params, storage))[0])
    got = dict(jax.tree_util.tree_flatten_with_path(loaded)[0])
    assert got.keys() == expected.keys()
    scales = [path for path in got if jax.tree_util.keystr(path).endswith(f"['{KERNEL_SCALE}']")]
    assert bool(scales) == (storage == "int8")
    for path, leaf in got.items():
        assert leaf.dtype == expected[path].dtype, path
        assert np.array_equal(np.asarray(leaf, np.float32), np.asarray(expected[path], np.float32)), path
    assert storage_of(loaded, jnp.float32) == storage and storage_of(params, jnp.float32) == "float32"
    # Under bfloat16 arithmetic bfloat16 kernels are the compute dtype's own: no narrower storage.
    assert storage_of(store_weights(params, "bfloat16"), jnp.bfloat16) == "float32"


def test_narrower_storage_is_refused_under_half_dtypes_and_auto_keeps_their_weights():
    for dtype in ("bfloat16", "float16"):
        for storage in ("bfloat16", "int8"):
            with pytest.raises(ValueError, match=f"weight_storage='{storage}': .*compute in float32, not "
                                                 f"{dtype}.*dtype='float32'"):
                choose_storage(storage, dtype)
        assert choose_storage("auto", dtype) == "float32"
        assert choose_storage("float32", dtype) == "float32"
    assert choose_storage("int8", "float32") == "int8"
    assert storage_for_host("auto", width=64, repeats=1) in STORAGES
    with pytest.raises(ValueError, match="float32, bfloat16, int8"):
        choose_storage("fp8", "float32")
    with pytest.raises(ValueError, match="weight_storage='int8'"):   # before any model is looked for
        Pipeline.from_pretrained("no-such-model", "no-such-vqgan", dtype="bfloat16", weight_storage="int8")


@pytest.mark.parametrize("storage", ["bfloat16", "int8"])
def test_a_run_on_stored_weights_records_them_and_reproduces_every_token(storage, tmp_path):
    pipe = tiny_pipeline(max_batch=2, weight_storage=storage)
    assert pipe.weight_storage == storage and pipe.dtype == "float32"
    run = save_run(pipe, Generate(prompts=["a red cube", "a blue sphere"], n_images=2, seed=11), tmp_path)
    entries = run.folder.entries()
    assert len(entries) == 4 and all(entry["weight_storage"] == storage for entry in entries)
    for entry in entries:
        png = run.folder.image_path(entry)
        assert read_png_metadata(png)["weight_storage"] == storage
        made = reproduce(pipe, png).check()
        assert made.tokens.tolist() == entry["tokens"] and made.tokens_differing == 0
        assert made.storage_here == storage == made.image.weight_storage


def test_a_png_without_a_storage_means_float32_and_a_mismatch_names_the_option(tmp_path):
    pipe = tiny_pipeline(max_batch=2)
    run = save_run(pipe, Generate(prompts=["a red cube"], n_images=1, seed=5), tmp_path)
    png = run.folder.image_path(run.folder.entries()[0])
    metadata = read_png_metadata(png)
    assert metadata["weight_storage"] == "float32"
    pixels = np.asarray(Image.open(png))
    old = tmp_path / "old.png"            # saved before nbkit recorded the storage
    old.write_bytes(png_bytes(pixels, {k: v for k, v in metadata.items() if k != "weight_storage"}))
    assert ImageRecord.from_metadata(read_png_metadata(old)).storage == "float32"
    assert reproduce(pipe, old).check().tokens_match
    tokens = list(metadata["tokens"])
    tokens[0] = (tokens[0] + 1) % pipe.model.config.image_vocab_size
    crafted = tmp_path / "int8.png"       # says int8, and its tokens are not what float32 draws
    crafted.write_bytes(png_bytes(pixels, {**metadata, "weight_storage": "int8", "tokens": tokens}))
    made = reproduce(pipe, crafted)
    assert made.tokens_differing == 1
    with pytest.raises(ValueError, match="kept as int8, and this pipeline keeps them as float32 .*"
                                         "--weight-storage int8"):
        made.check()
    with pytest.raises(ValueError, match="weight_storage must be one of float32, bfloat16, int8"):
        ImageRecord.from_metadata({**metadata, "weight_storage": "fp8"})
