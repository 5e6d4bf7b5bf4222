import numpy as np
import pytest
from conftest import golden_folders
from PIL import Image

from nbkit.output.rerank import Reranker


@pytest.fixture(scope="module")
def reranker():
    folders = golden_folders("clip")
    if not folders:
        pytest.skip("no clip-* fixture")
    return Reranker.from_folder(folders[0], batch_size=4), folders[0]


def images(folder, count):
    pool = [Image.open(p) for p in sorted(folder.glob("image_*.png"))]
    return [pool[i % len(pool)] for i in range(count)]


def test_scores_match_clip_logits(reranker):
    ranker, folder = reranker
    expected = np.load(folder / "expected.npz", allow_pickle=True)
    texts = list(expected["texts"])
    pictures = images(folder, 4)
    for t, text in enumerate(texts):
        np.testing.assert_allclose(ranker.scores(pictures, [text] * 4), expected["logits_per_image"][:, t], atol=1e-4)


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
    assert many[0] == pytest.approx(one[0], abs=1e-5)  # padding never changes a score


def test_mismatched_images_and_prompts_are_refused(reranker):
    ranker, folder = reranker
    with pytest.raises(ValueError, match="one prompt per image"):
        ranker.scores(images(folder, 2), ["a"])
    with pytest.raises(TypeError, match="Wrap it in a list"):
        ranker.scores(images(folder, 1), "a")


def test_half_precision_scores_rank_alike(reranker):
    import jax.numpy as jnp
    ranker, folder = reranker
    half = Reranker.from_folder(folder, dtype=jnp.bfloat16, batch_size=4)
    pictures, prompts = images(folder, 4), ["a cat"] * 4
    np.testing.assert_allclose(half.scores(pictures, prompts), ranker.scores(pictures, prompts), atol=0.5)
