import numpy as np
import pytest
from conftest import REFERENCE_ATOL, golden_folder, golden_params
from PIL import Image

from nbkit.models.clip import CLIP
from nbkit.output.rerank import ImagePreprocessing
from nbkit.text.tokenizer import CLIPTokenizer
from nbkit.weights.loaders import load_clip


def three_roundings(values) -> float:
    """Rescaling, subtracting the mean and dividing by the std round three times, each by at most eps/2
    of the values: on both sides, 3 eps; 4 eps of the largest value covers it."""
    return 4 * float(np.finfo(np.float32).eps) * float(np.abs(values).max())


def golden_images(folder):
    return [Image.open(path) for path in sorted(folder.glob("image_*.png"))]


@pytest.mark.golden
@pytest.mark.parametrize("folder", golden_params("clip"))
def test_inputs_and_outputs_match_the_reference(folder):
    expected = np.load(folder / "expected.npz", allow_pickle=True)
    model, params = load_clip(folder)
    tokenizer = CLIPTokenizer.from_folder(folder, model.config.text.max_position_embeddings)
    ids, mask = tokenizer(list(expected["texts"]))
    np.testing.assert_array_equal(ids, expected["input_ids"])
    np.testing.assert_array_equal(mask, expected["attention_mask"])

    pixels = ImagePreprocessing.from_folder(folder)(golden_images(folder))
    # Same resize (PIL bicubic) and crop; rescale and normalize in float32 in another
    # order of operations, so values agree to float32 rounding, not bit for bit.
    np.testing.assert_allclose(pixels.transpose(0, 3, 1, 2), expected["pixel_values"],
                               atol=three_roundings(expected["pixel_values"]), rtol=0)

    variables = {"params": params}
    np.testing.assert_allclose(model.apply(variables, pixels, method=CLIP.embed_images),
                               expected["image_embeds"],
                               atol=REFERENCE_ATOL, rtol=0)
    np.testing.assert_allclose(model.apply(variables, ids, mask, method=CLIP.embed_text),
                               expected["text_embeds"],
                               atol=REFERENCE_ATOL, rtol=0)
    np.testing.assert_allclose(model.apply(variables, ids, mask, pixels), expected["logits_per_image"],
                               atol=REFERENCE_ATOL, rtol=0)


@pytest.fixture(scope="module")
def preprocess():
    return ImagePreprocessing.from_folder(golden_folder("clip"))


@pytest.mark.parametrize("mode, size", [("RGBA", (300, 200)), ("L", (200, 300)), ("RGB", (224, 500)),
                                        ("P", (64, 64))])
def test_any_pil_image_becomes_a_normalized_square(preprocess, mode, size):
    image = Image.new(mode, size, color=128 if mode in ("L", "P") else (200, 30, 60, 255)[: len(mode)])
    pixels = preprocess([image])
    assert pixels.shape == (1, preprocess.crop_height, preprocess.crop_width, 3)
    assert pixels.dtype == np.float32
    assert np.isfinite(pixels).all()


def test_float_arrays_are_read_as_zero_to_one(preprocess):
    as_float = preprocess([np.full((256, 256, 3), 0.5, np.float32)])
    as_uint8 = preprocess([np.full((256, 256, 3), 127, np.uint8)])
    np.testing.assert_allclose(as_float, as_uint8)


def test_center_crop_keeps_the_middle(preprocess):
    image = np.zeros((224, 448, 3), np.uint8)
    image[:, 112:336] = 255  # a white middle half
    pixels = preprocess([image])[0]
    white = (1.0 - np.float32(preprocess.image_mean)) / np.float32(preprocess.image_std)
    np.testing.assert_allclose(pixels[:, 10:-10], np.broadcast_to(white, pixels[:, 10:-10].shape),
                               atol=three_roundings(white), rtol=0)
