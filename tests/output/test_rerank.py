import numpy as np
import pytest
from conftest import REFERENCE_ATOL, golden_folder, rounding_bound
from PIL import Image

from nbkit.output.rerank import Reranker


@pytest.fixture(scope="module")
def reranker():
    folder = golden_folder("clip")
    return Reranker.from_folder(folder, batch_size=4), folder


def images(folder, count):
    pool = [Image.open(p) for p in sorted(folder.glob("image_*.png"))]
    return [pool[i % len(pool)] for i in range(count)]


def test_scores_match_clip_logits(reranker):
    ranker, folder = reranker
    expected = np.load(folder / "expected.npz", allow_pickle=True)
    texts = list(expected["texts"])
    pictures = images(folder, 4)
    for t, text in enumerate(texts):
        np.testing.assert_allclose(ranker.scores(pictures, [text] * 4), expected["logits_per_image"][:, t],
                                   atol=REFERENCE_ATOL)


def test_rank_sorts_each_prompts_images_by_score(reranker):
    ranker, folder = reranker
    pictures = images(folder, 6)
    prompts = ["a cat", "a dog", "a cat", "a dog", "a cat", "a cat"]
    scores = ranker.scores(pictures, prompts)
    ranked = ranker.rank(pictures, prompts)
    assert list(ranked) == ["a cat", "a dog"]
    assert sorted(r.index for r in ranked["a cat"]) == [0, 2, 4, 5]
    for prompt, items in ranked.items():
        assert [r.score for r in items] == sorted((r.score for r in items), reverse=True)
        for item in items:
            assert prompts[item.index] == prompt
            assert item.score == pytest.approx(scores[item.index])


def test_any_number_of_images_reuses_one_compiled_function(reranker, count_compilations):
    ranker, folder = reranker
    ranker.scores(images(folder, 1), ["warm up"])
    with count_compilations() as counter:
        one = ranker.scores(images(folder, 1), ["a tree"])
        many = ranker.scores(images(folder, 11), ["a tree"] * 11)  # three padded batches of 4
    assert counter.count == 0
    assert one.shape == (1,) and many.shape == (11,)
    # padding never changes a score beyond float32 rounding (its batch may be summed in another order)
    assert abs(many[0] - one[0]) <= rounding_bound(np.float32, ranker.params, logit_scale(ranker))


def test_mismatched_images_and_prompts_are_refused(reranker):
    ranker, folder = reranker
    with pytest.raises(ValueError, match="one prompt per image"):
        ranker.scores(images(folder, 2), ["a"])
    with pytest.raises(TypeError, match="Wrap it in a list"):
        ranker.scores(images(folder, 1), "a")


def logit_scale(ranker) -> float:
    """A score is this scale × the cosine of two unit vectors: the magnitude its rounding scales with."""
    return float(np.exp(np.float32(ranker.params["logit_scale"])))


PROMPTS = ["snow", "x", "a robot", "the city at night", "a bowl of soup", "abstract art with circles",
           "a dog on a red mat", "a cat", "two people walking", "a painting of a sunflower",
           "an armchair in the shape of an avocado", "an astronaut riding a horse", "green trees",
           "a photo of the moon", "sunset over a lake in the mountains", "a red bus"]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_scores_rank_alike(reranker, dtype):
    """Scores stray from float32's by no more than rounding allows (conftest.rounding_bound), and so order
    alike wherever float32 sets them further apart than twice that. This tiny random CLIP scores all
    images within 0.05 of each other, below bfloat16's resolution at its logit scale (14), but it spreads
    prompts over 5 logits: the prompts' order for each image is what is compared."""
    ranker, folder = reranker
    half = Reranker.from_folder(folder, dtype=dtype, batch_size=4)
    bound = rounding_bound(dtype, half.params, logit_scale(ranker))
    checked = 0
    for picture in images(folder, 4):
        full, halved = (r.scores([picture] * len(PROMPTS), PROMPTS) for r in (ranker, half))
        assert np.abs(halved - full).max() <= bound
        apart = full[:, None] - full[None, :] > 2 * bound          # prompt i clearly above prompt j
        above = halved[:, None] > halved[None, :]
        assert above[apart].all(), [(PROMPTS[i], PROMPTS[j]) for i, j in np.argwhere(apart & ~above)]
        checked += int(apart.sum())
    assert checked >= 4 * 10, checked                                # not an empty check
