import math

import numpy as np
import pytest
from conftest import REFERENCE_ATOL, golden_folder, golden_params, max_magnitude, rounding_bound

from nbkit.models.vqgan import VQGANConfig, decode, to_uint8
from nbkit.weights.loaders import load_vqgan


@pytest.mark.golden
@pytest.mark.parametrize("folder", golden_params("vqgan"))
def test_decoded_pixels_match_the_reference_in_float32(folder):
    expected = np.load(folder / "expected.npz")
    model, params = load_vqgan(folder)
    pixels = np.asarray(decode(model, params, expected["codes"]))
    assert pixels.shape == expected["decoded"].shape
    np.testing.assert_allclose(pixels, expected["decoded"], atol=REFERENCE_ATOL, rtol=0)


@pytest.fixture(scope="module")
def vqgan():
    return load_vqgan(golden_folder("vqgan"))


def test_only_the_decoder_half_is_loaded(vqgan):
    model, params = vqgan
    assert set(params) == {"embedding", "post_quant_conv", "decoder"}
    assert params["embedding"]["embedding"].shape == (model.config.n_embed, model.config.embed_dim)


def test_codes_outside_the_codebook_are_refused(vqgan):
    model, params = vqgan
    codes = np.zeros((1, model.config.grid_size**2), np.int32)
    codes[0, 5] = model.config.n_embed
    with pytest.raises(ValueError, match=r"Codes must be in \[0, "):
        decode(model, params, codes)
    with pytest.raises(ValueError, match="Expected codes of shape"):
        decode(model, params, codes[:, :10])


def test_uint8_images_are_clipped_and_scaled():
    pixels = np.array([[-0.5, 0.0, 0.5, 1.0, 1.7]], np.float32)
    assert to_uint8(pixels).tolist() == [[0, 0, 127, 255, 255]]


def test_grid_size_follows_the_number_of_levels():
    assert VQGANConfig().grid_size == 16
    assert VQGANConfig(ch_mult=(1, 2, 4)).grid_size == 64


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_decoding_stays_within_rounding(dtype):
    """Each pixel strays from float32's by no more than the dtype's rounding allows (conftest.rounding_bound);
    as 8-bit levels that is at most 255 × that bound, plus one for the rounding to a level."""
    folder = golden_folder("vqgan")
    expected = np.load(folder / "expected.npz")
    model, params = load_vqgan(folder, dtype)
    pixels = np.asarray(decode(model, params, expected["codes"]))
    assert pixels.dtype == np.float32
    bound = rounding_bound(dtype, params, max_magnitude(expected["decoded"]))
    assert np.abs(pixels - expected["decoded"]).max() <= bound
    levels = np.abs(to_uint8(pixels).astype(int) - to_uint8(expected["decoded"]).astype(int))
    assert levels.max() <= math.ceil(255 * bound) + 1
