"""prompts → image tokens (DalleBart) → pixels (VQGAN) → ranked (CLIP), on the tiny models."""

import jax
import numpy as np
import pytest
from conftest import golden_folder

from nbkit.generation.sampling import SamplingSettings, sample_image_tokens
from nbkit.models.vqgan import decode, to_uint8
from nbkit.output.rerank import Reranker
from nbkit.text.tokenizer import PromptTokenizer
from nbkit.weights.loaders import load_dallebart, load_vqgan

PROMPTS = ["an armchair in the shape of an avocado", "sunset over a lake"]
PER_PROMPT = 3


@pytest.fixture(scope="module")
def stack():
    dalle_folder, vqgan_folder, clip_folder = (golden_folder(k) for k in ("dallebart", "vqgan", "clip"))
    return (load_dallebart(dalle_folder), PromptTokenizer.from_folder(dalle_folder), load_vqgan(vqgan_folder),
            Reranker.from_folder(clip_folder))


def generate(stack, seed):
    (dalle, dalle_params), tokenize, (vqgan, vqgan_params), reranker = stack
    prompts = [p for p in PROMPTS for _ in range(PER_PROMPT)]
    keys = jax.random.split(jax.random.PRNGKey(seed), len(prompts))
    settings = SamplingSettings(condition_scale=3.0)
    tokens = sample_image_tokens(dalle, dalle_params, tokenize(prompts), keys, settings,
                                 codebook_size=vqgan.config.n_embed)
    images = to_uint8(decode(vqgan, vqgan_params, tokens))
    scores, ranked = reranker.scores(list(images), prompts), reranker.rank(list(images), prompts)
    return prompts, np.asarray(tokens), images, scores, ranked


def test_prompts_become_ranked_images(stack):
    prompts, tokens, images, scores, ranked = generate(stack, seed=0)
    vqgan = stack[2][0]
    side = vqgan.config.resolution
    assert tokens.shape == (len(prompts), vqgan.config.grid_size**2)
    assert tokens.min() >= 0 and tokens.max() < vqgan.config.n_embed
    assert images.shape == (len(prompts), side, side, 3) and images.dtype == np.uint8
    assert images.std() > 0  # not a blank canvas
    assert np.isfinite(scores).all()
    assert list(ranked) == PROMPTS
    for prompt, items in ranked.items():
        assert len(items) == PER_PROMPT
        assert {prompts[item.index] for item in items} == {prompt}
        assert [item.score for item in items] == sorted(scores[[item.index for item in items]], reverse=True)


def test_the_same_seed_gives_the_same_images_and_order(stack):
    first, second, other = generate(stack, seed=1), generate(stack, seed=1), generate(stack, seed=2)
    np.testing.assert_array_equal(first[2], second[2])
    assert [[i.index for i in items] for items in first[4].values()] == \
           [[i.index for i in items] for items in second[4].values()]
    assert not np.array_equal(first[1], other[1])
