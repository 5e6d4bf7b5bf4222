"""The VQGAN encoder (pixels → codes) against the reference, its separate loading, and image input."""

import shutil

import numpy as np
import pytest
from conftest import BUNDLED_GOLDEN_DIR, GOLDEN_DIR, REFERENCE_ATOL, golden_folder, golden_params
from flax import serialization
from flax.traverse_util import flatten_dict, unflatten_dict
from PIL import Image

from nbkit.models.vqgan import (
    compiled_encoder,
    decode,
    encode,
    image_to_pixels,
    nearest_codes,
    to_uint8,
)
from nbkit.png import png_bytes
from nbkit.weights.checkpoint import CheckpointError
from nbkit.weights.loaders import WEIGHTS_FILE, load_vqgan, load_vqgan_encoder

ENCODE_FILE = "expected_encode.npz"
# Indices are compared where the nearest code beats the second by more than this: closer calls may
# fall either way in another float order (tests/fixtures/golden/README.md).
TIE_MARGIN = 1e-3


def encode_golden_params():
    """Every vqgan-* golden folder that has expected_encode.npz. The bundled set must have one; a set
    from NBKIT_GOLDEN_DIR without any is skipped, naming it."""
    params = golden_params("vqgan")
    if any(param.values[0] is None for param in params):
        return params  # an unusable set, or no vqgan-* folder: conftest fails or skips it
    folders = [param.values[0] for param in params if (param.values[0] / ENCODE_FILE).is_file()]
    if folders:
        return [pytest.param(folder, id=folder.name) for folder in folders]
    if GOLDEN_DIR == BUNDLED_GOLDEN_DIR:
        return [pytest.param(None, id=f"no-{ENCODE_FILE}")]
    return [pytest.param(None, marks=pytest.mark.skip(reason=f"no vqgan-* folder in {GOLDEN_DIR} "
                                                                f"has {ENCODE_FILE}"))]


def expected_encoding(folder):
    if folder is None:
        pytest.fail(f"No vqgan-* folder of the bundled golden set {GOLDEN_DIR} has {ENCODE_FILE}. "
                    "Restore it: git checkout -- tests/fixtures/golden", pytrace=False)
    return np.load(folder / ENCODE_FILE)


@pytest.mark.golden
@pytest.mark.parametrize("folder", encode_golden_params())
def test_encoder_matches_the_reference_in_float32(folder):
    expected = expected_encoding(folder)
    model, params = load_vqgan_encoder(folder)
    latent, codes = compiled_encoder(model)(params, expected["pixels"])
    np.testing.assert_allclose(np.asarray(latent), expected["latent"], atol=REFERENCE_ATOL, rtol=0)
    clear = expected["margin"] > TIE_MARGIN
    assert clear.mean() > 0.5  # most positions are compared
    np.testing.assert_array_equal(np.asarray(codes)[clear], expected["indices"][clear])
    public = encode(model, params, expected["pixels"])
    assert public.dtype == np.int32 and public.shape == expected["indices"].shape
    np.testing.assert_array_equal(public, np.asarray(codes))


@pytest.mark.golden
@pytest.mark.parametrize("folder", encode_golden_params())
def test_decoding_the_reference_codes_matches_its_roundtrip(folder):
    expected = expected_encoding(folder)
    model, params = load_vqgan(folder)
    pixels = np.asarray(decode(model, params, expected["indices"]))
    np.testing.assert_allclose(pixels, expected["roundtrip"], atol=REFERENCE_ATOL, rtol=0)


def copy_model(folder, destination, change) -> None:
    """A copy of a model folder whose checkpoint is rewritten by `change(flat tree) -> flat tree`."""
    destination.mkdir()
    shutil.copy(folder / "config.json", destination / "config.json")
    tree = flatten_dict(serialization.msgpack_restore((folder / WEIGHTS_FILE).read_bytes()))
    (destination / WEIGHTS_FILE).write_bytes(serialization.msgpack_serialize(unflatten_dict(change(tree))))


@pytest.mark.golden
@pytest.mark.parametrize("folder", encode_golden_params())
def test_a_corrupted_encoder_fails_the_comparison_and_leaves_the_decoder_alone(folder, tmp_path):
    """One encoder tensor off by 0.1 % must fail the latent comparison; the decoder never reads it."""
    expected = expected_encoding(folder)

    def corrupt(tree):
        key = ("encoder", "conv_in", "kernel")
        return {**tree, key: tree[key] * np.float32(1.001)}

    copy_model(folder, tmp_path / "corrupted", corrupt)
    model, params = load_vqgan_encoder(tmp_path / "corrupted")
    latent, _ = compiled_encoder(model)(params, expected["pixels"])
    assert np.abs(np.asarray(latent) - expected["latent"]).max() > 10 * REFERENCE_ATOL
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(np.asarray(latent), expected["latent"], atol=REFERENCE_ATOL, rtol=0)

    original, corrupted = load_vqgan(folder)[1], load_vqgan(tmp_path / "corrupted")[1]
    for key, value in flatten_dict(original).items():
        np.testing.assert_array_equal(np.asarray(flatten_dict(corrupted)[key]), np.asarray(value))


@pytest.fixture(scope="module")
def encoder():
    return load_vqgan_encoder(golden_folder("vqgan"))


def test_decoder_and_encoder_load_only_their_own_halves(encoder, tmp_path):
    folder = golden_folder("vqgan")
    _, decoder_params = load_vqgan(folder)
    assert set(decoder_params) == {"embedding", "post_quant_conv", "decoder"}
    model, params = encoder
    assert set(params) == {"embedding", "quant_conv", "encoder"}
    np.testing.assert_array_equal(np.asarray(params["embedding"]["embedding"]),
                                  np.asarray(decoder_params["embedding"]["embedding"]))

    # A file without the decoder still encodes (and cannot decode).
    copy_model(folder, tmp_path / "encoder-only",
               lambda tree: {k: v for k, v in tree.items() if k[0] not in ("decoder", "post_quant_conv")})
    _, alone = load_vqgan_encoder(tmp_path / "encoder-only")
    for key, value in flatten_dict(params).items():
        np.testing.assert_array_equal(np.asarray(flatten_dict(alone)[key]), np.asarray(value))
    with pytest.raises(CheckpointError, match="missing: decoder/"):
        load_vqgan(tmp_path / "encoder-only")


def test_nearest_codes_are_the_closest_codebook_rows():
    rng = np.random.default_rng(0)
    codebook = rng.normal(size=(64, 16)).astype(np.float32)
    wanted = rng.integers(0, 64, (2, 256))
    latent = codebook[wanted].reshape(2, 16, 16, 16)
    np.testing.assert_array_equal(np.asarray(nearest_codes(latent, codebook)), wanted)
    latent = rng.normal(size=(2, 16, 16, 16)).astype(np.float32)
    distances = ((latent.reshape(-1, 1, 16).astype(np.float64) - codebook[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(np.asarray(nearest_codes(latent, codebook)).ravel(), distances.argmin(1))


def test_encode_refuses_pixels_it_cannot_use(encoder):
    model, params = encoder
    side = model.config.resolution
    good = np.full((1, side, side, 3), 0.5, np.float32)
    for pixels, message in [
        ((good * 255).astype(np.uint8), "float pixels"),
        (good[0], "pass pixels\\[None\\]"),
        (good[:, :-1], f"image_to_pixels\\(image, {side}\\)"),
        (good * 255, "in \\[0, 1\\]"),
        (np.where(good > 0, np.nan, good), "NaN or infinite"),
    ]:
        with pytest.raises(ValueError, match=message):
            encode(model, params, pixels)


# ---- image_to_pixels


def random_image(height, width, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def test_an_nbkit_png_passes_through_unchanged(tmp_path):
    image = random_image(256, 256)
    path = tmp_path / "image.png"
    path.write_bytes(png_bytes(image, {"prompt": "a test"}))
    pixels = image_to_pixels(path, 256)
    assert pixels.dtype == np.float32 and pixels.shape == (256, 256, 3)
    np.testing.assert_array_equal(pixels, image.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(to_uint8(pixels), image)
    with Image.open(path) as opened:
        for same in (str(path), opened, image, pixels):
            np.testing.assert_array_equal(image_to_pixels(same, 256), pixels)


def test_grayscale_and_transparent_images_become_rgb():
    gray = random_image(256, 256, 1)
    expected = np.repeat(gray, 3, axis=2) / np.float32(255)
    for image in (gray, gray[..., 0], Image.fromarray(gray[..., 0], "L")):
        np.testing.assert_array_equal(image_to_pixels(image, 256), expected)

    rgb = random_image(256, 256)
    opaque = np.concatenate([rgb, np.full((256, 256, 1), 255, np.uint8)], axis=2)
    for image in (opaque, Image.fromarray(opaque, "RGBA")):
        np.testing.assert_array_equal(image_to_pixels(image, 256), image_to_pixels(rgb, 256))
    # Transparency shows the white behind it, not the colours hidden under alpha 0.
    half = opaque.copy()
    half[..., 3] = 0
    half[:128, :, 3] = 255
    pixels = image_to_pixels(Image.fromarray(half, "RGBA"), 256)
    np.testing.assert_array_equal(pixels[128:], 1.0)
    np.testing.assert_array_equal(pixels[:128], rgb[:128] / np.float32(255))


def test_non_square_images_are_center_cropped():
    wide, tall = random_image(256, 320), random_image(331, 256)
    np.testing.assert_array_equal(image_to_pixels(wide, 256), wide[:, 32:288] / np.float32(255))
    np.testing.assert_array_equal(image_to_pixels(tall, 256), tall[37:293] / np.float32(255))


def test_other_sizes_are_resized_without_aliasing():
    flat = np.full((300, 500, 3), 0.25, np.float32)
    pixels = image_to_pixels(flat, 256)
    assert pixels.shape == (256, 256, 3) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels, 0.25, atol=1e-6)
    # One-pixel stripes at half the size: a filter that skipped pixels would keep 0s or 1s (moiré);
    # an anti-aliasing one averages them to grey.
    stripes = np.zeros((512, 512), np.uint8)
    stripes[::2] = 255
    assert np.abs(image_to_pixels(stripes, 256)[8:-8, 8:-8] - 0.5).max() < 0.02
    small = image_to_pixels(random_image(64, 64), 256)
    assert small.shape == (256, 256, 3) and small.min() >= 0 and small.max() <= 1


def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    image = random_image(256, 256)
    exif = Image.Exif()
    exif[0x0112] = 3  # Orientation: rotated 180°
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path, exif=exif)
    np.testing.assert_array_equal(image_to_pixels(path, 256), image[::-1, ::-1] / np.float32(255))


def test_unusable_images_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    for image, error, message in [
        (np.full((8, 8, 3), 2.0, np.float32), ValueError, "must be in \\[0, 1\\]"),
        (np.full((8, 8, 3), np.inf, np.float32), ValueError, "NaN or infinite"),
        (np.full((8, 8, 3), 300, np.int32), ValueError, "0–255"),
        (np.zeros((8, 8, 2), np.uint8), ValueError, "\\(H, W, 3\\)"),
        (np.zeros((8, 8, 3), bool), ValueError, "uint8"),
        ([[0, 1], [1, 0]], TypeError, "a path, a PIL image or an array"),
        (42, TypeError, "a path, a PIL image or an array"),
        (tmp_path / "missing.png", FileNotFoundError, "missing.png"),
        (tmp_path / "notes.txt", ValueError, "not a readable image"),
    ]:
        with pytest.raises(error, match=message):
            image_to_pixels(image, 256)
    with pytest.raises(ValueError, match="resolution"):
        image_to_pixels(random_image(8, 8), 0)


def test_images_encode_end_to_end(encoder, tmp_path):
    model, params = encoder
    path = tmp_path / "image.png"
    Image.fromarray(random_image(300, 400)).save(path)
    pixels = np.stack([image_to_pixels(path, model.config.resolution)] * 2)
    codes = encode(model, params, pixels)
    assert codes.shape == (2, model.config.grid_size**2) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < model.config.n_embed
    np.testing.assert_array_equal(codes[0], codes[1])
