import numpy as np
import pytest
from conftest import golden_folders, golden_params

from nbkit.models.vqgan import VQGANConfig, decode, to_uint8
from nbkit.weights.loaders import load_vqgan


@pytest.mark.golden
@pytest.mark.parametrize("folder", golden_params("vqgan"))
def test_decoded_pixels_match_the_reference_in_float32(folder):
    expected = np.load(folder / "expected.npz")
    model, params = load_vqgan(folder)
    pixels = np.asarray(decode(model, params, expected["codes"]))
    assert pixels.shape == expected["decoded"].shape
    np.testing.assert_allclose(pixels, expected["decoded"], atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def vqgan():
    folders = golden_folders("vqgan")
    if not folders:
        pytest.skip("no vqgan-* fixture")
    return load_vqgan(folders[0])


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
def test_half_precision_decoding_stays_close(dtype):
    import jax.numpy as jnp
    folder = golden_folders("vqgan")[0]
    expected = np.load(folder / "expected.npz")
    model, params = load_vqgan(folder, getattr(jnp, dtype))
    pixels = np.asarray(decode(model, params, expected["codes"]))
    assert pixels.dtype == np.float32 and np.isfinite(pixels).all()
    # 8-bit pixels differ by a few levels at most
    assert np.abs(to_uint8(pixels).astype(int) - to_uint8(expected["decoded"]).astype(int)).mean() < 3
