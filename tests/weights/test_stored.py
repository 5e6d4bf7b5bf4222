"""Few-row products (the CPU's multiply-and-sum form) and weights stored as bfloat16 / int8."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import golden_folder, max_magnitude

from nbkit.generation.sampling import SamplingSettings, sample_image_tokens
from nbkit.models.dallebart import FEW_ROWS, DalleBart, Dense, few_row_product
from nbkit.text.tokenizer import PromptTokenizer
from nbkit.weights.loaders import load_dallebart
from nbkit.weights.stored import quantize_int8, storage_for_host, store_weights

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
