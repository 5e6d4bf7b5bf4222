import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import golden_folder, golden_params, read_json, reference_prng

from nbkit.generation.sampling import (
    SamplingSettings,
    compiled_sampler,
    filter_logits,
    sample_image_tokens,
)
from nbkit.text.tokenizer import PromptTokenizer
from nbkit.weights.loaders import load_dallebart


def load(folder):
    model, params = load_dallebart(folder)
    tokenizer = PromptTokenizer.from_folder(folder, model.config.max_text_length, model.config.normalize_text)
    return model, params, tokenizer


@pytest.mark.golden
@pytest.mark.parametrize("folder", golden_params("dallebart"))
def test_sampled_sequences_match_the_reference_bit_for_bit(folder):
    expected = np.load(folder / "expected.npz", allow_pickle=True)
    samples = read_json(folder / "expected.json")["samples"]
    model, params, tokenizer = load(folder)
    prompts = tokenizer(list(expected["prompts"]))
    assert samples
    with reference_prng():
        for i, sample in enumerate(samples):
            settings = SamplingSettings(temperature=sample["temperature"], top_k=sample["top_k"],
                                        top_p=sample["top_p"], condition_scale=sample["condition_scale"])
            tokens = sample_image_tokens(model, params, prompts, jax.random.PRNGKey(sample["seed"]), settings)
            reference = expected[f"sample_{i}_sequences"]
            assert (reference[:, 0] == model.config.decoder_start_token_id).all()
            np.testing.assert_array_equal(np.asarray(tokens), reference[:, 1:],
                                          err_msg=f"sample {i}: {sample}")


@pytest.fixture(scope="module")
def tiny():
    return load(golden_folder("dallebart"))


def test_tokens_outside_the_codebook_are_never_drawn(tiny):
    model, params, tokenizer = tiny
    prompts = tokenizer(["a", "b", "c", "d"])
    settings = SamplingSettings(temperature=3.0, top_k=model.config.decoder_vocab_size, condition_scale=1.0)
    free = np.asarray(sample_image_tokens(model, params, prompts, jax.random.PRNGKey(0), settings))
    assert free.max() >= 16  # with a flat distribution, high codes do come up...
    limited = np.asarray(sample_image_tokens(model, params, prompts, jax.random.PRNGKey(0), settings,
                                             codebook_size=16))
    assert limited.shape == (4, model.config.image_length)
    assert limited.min() >= 0 and limited.max() < 16  # ...unless the VQGAN cannot decode them


def test_one_key_per_prompt_makes_rows_independent_of_the_batch(tiny):
    model, params, tokenizer = tiny
    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    together = sample_image_tokens(model, params, tokenizer(["a cat", "a dog", "a cow"]), keys)
    alone = sample_image_tokens(model, params, tokenizer(["a dog"]), keys[1:2])
    np.testing.assert_array_equal(together[1], alone[0])
    assert not np.array_equal(together[0], together[1])


def test_new_prompts_settings_and_seed_reuse_the_compiled_loop(tiny, count_compilations):
    model, params, tokenizer = tiny
    for scale in (10, 1):     # scale 1 has its own program, with no unconditioned rows
        sample_image_tokens(model, params, tokenizer(["first", "second"]), jax.random.PRNGKey(0),
                            SamplingSettings(condition_scale=scale)).block_until_ready()
    with count_compilations() as counter:
        for seed, (prompts, settings) in enumerate([
            (["a red bus", "#catlover"],
             SamplingSettings(temperature=0.5, top_k=4, top_p=0.9, condition_scale=3)),
            (["x", ""], SamplingSettings(temperature=2.0, top_p=0.5, condition_scale=1)),
            (["a tree", "a tree"], SamplingSettings()),
        ], start=1):
            key = jax.random.PRNGKey(seed)
            sample_image_tokens(model, params, tokenizer(prompts), key, settings).block_until_ready()
    assert counter.count == 0


def test_top_k_one_is_greedy_and_settings_change_the_draw(tiny):
    model, params, tokenizer = tiny
    prompts = tokenizer(["a cat"])
    greedy = [sample_image_tokens(model, params, prompts, jax.random.PRNGKey(s), SamplingSettings(top_k=1))
              for s in (0, 1)]
    np.testing.assert_array_equal(greedy[0], greedy[1])
    hot = SamplingSettings(temperature=5.0)
    varied = sample_image_tokens(model, params, prompts, jax.random.PRNGKey(0), hot)
    assert not np.array_equal(varied, greedy[0])


def test_filter_logits_applies_temperature_then_top_k_then_top_p():
    logits = jnp.log(jnp.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = lambda out: np.isfinite(np.asarray(out))[0].tolist()
    assert kept(filter_logits(logits, 1.0, 0, 1.0)) == [True] * 5
    assert kept(filter_logits(logits, 1.0, 2, 1.0)) == [True, True, False, False, False]
    # top-p keeps tokens until 0.6 is reached, including the one that crosses it
    assert kept(filter_logits(logits, 1.0, 0, 0.6)) == [True, True, False, False, False]
    assert kept(filter_logits(logits, 1.0, 0, 0.5)) == [True, False, False, False, False]
    # after top-k 3, probabilities renormalize over 3 tokens: 0.59, 0.24, 0.18
    assert kept(filter_logits(logits, 1.0, 3, 0.8)) == [True, True, False, False, False]
    np.testing.assert_allclose(filter_logits(logits, 2.0, 0, 1.0), logits / 2.0)


@pytest.mark.parametrize("settings, message", [
    (dict(temperature=0), "temperature must be a number > 0"),
    (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=0), "top_k must be a whole number ≥ 1"),
    (dict(top_k=2.5), "top_k"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), "top_p"),
    (dict(condition_scale=-1), "condition_scale must be a number ≥ 0"),
    (dict(condition_scale="10"), "condition_scale"),
])
def test_bad_settings_say_what_is_allowed(settings, message):
    with pytest.raises(ValueError, match=message):
        SamplingSettings(**settings)


def test_key_count_must_match_prompts(tiny):
    model, params, tokenizer = tiny
    with pytest.raises(ValueError, match="Got 3 keys for 2 prompts"):
        sample_image_tokens(model, params, tokenizer(["a", "b"]), jax.random.split(jax.random.PRNGKey(0), 3))


def test_condition_scale_one_runs_no_unconditioned_rows(tiny):
    """At scale 1 the mix is the conditioned logits: the program that skips the other half costs half."""
    model, params, tokenizer = tiny
    prompts = tokenizer(["a cat", "a dog"])
    settings = SamplingSettings(condition_scale=1).as_arrays(model.config)
    nothing_kept = (jnp.zeros((2, 256), jnp.int32), jnp.zeros((2, 256), bool), 0)
    args = (params, prompts.input_ids, prompts.attention_mask, prompts.input_ids_uncond,
            prompts.attention_mask_uncond, jax.random.PRNGKey(0), settings, *nothing_kept)
    flops = {}
    for mixed in (True, False):
        sampler = compiled_sampler(model, None, mixed)
        state = jax.eval_shape(sampler.start, *args)
        cost = sampler.advance.lower(params, state, settings, 1, 2).compile().cost_analysis()
        flops[mixed] = (cost[0] if isinstance(cost, list) else cost)["flops"]
    assert flops[False] < 0.55 * flops[True]
    one = sample_image_tokens(model, params, prompts, jax.random.PRNGKey(3),
                              SamplingSettings(condition_scale=1))
    assert one.shape == (2, model.config.image_length)


def _known(rows: int, model, seed: int = 0):
    """Random image tokens to keep (codes 0..63: the tiny VQGAN's codebook size)."""
    return np.random.default_rng(seed).integers(0, 64, (rows, model.config.image_length)).astype(np.int32)


def test_kept_tokens_come_out_exactly_and_the_rest_is_drawn(tiny):
    model, params, tokenizer = tiny
    prompts = tokenizer(["a cat", "a dog", "a cow"])
    known = _known(3, model)
    kept = np.zeros_like(known, bool)
    kept[0, :100] = True                        # a prefix (a variation keeping 6¼ rows)
    kept[1, ::3] = True                         # any pattern
    kept[2, 200:] = True                        # a suffix (what follows a hole)
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    tokens = np.asarray(sample_image_tokens(model, params, prompts, keys, known=known, kept=kept,
                                            codebook_size=64))
    np.testing.assert_array_equal(tokens[kept], known[kept])
    free = np.asarray(sample_image_tokens(model, params, prompts, keys, codebook_size=64))
    assert (tokens[~kept] != free[~kept]).any()          # conditioning on kept tokens changes what follows
    everything = np.ones_like(kept)
    np.testing.assert_array_equal(
        sample_image_tokens(model, params, prompts, keys, known=known, kept=everything, codebook_size=64),
        known)


@pytest.mark.parametrize("prefix", [1, 16, 37, 128, 255])
def test_a_kept_prefix_run_in_one_pass_equals_forcing_it_step_by_step(tiny, prefix):
    """Float32: the prefix's cache filled a row of tokens per call gives the tokens of forcing the same
    tokens one step at a time, bit for bit (the keys advance the same way in both)."""
    model, params, tokenizer = tiny
    prompts = tokenizer(["a cat", "a dog"])
    sampler = compiled_sampler(model, 64, True)
    settings = SamplingSettings().as_arrays(model.config)
    known = jnp.asarray(_known(2, model, prefix))
    kept = jnp.zeros((2, 256), bool).at[:, :prefix].set(True)
    keys = jax.random.split(jax.random.PRNGKey(prefix), 2)
    args = (params, prompts.input_ids, prompts.attention_mask, prompts.input_ids_uncond,
            prompts.attention_mask_uncond, keys, settings, known, kept)
    one_pass = sampler.advance(params, sampler.start(*args, prefix), settings, prefix, 256).tokens
    step_by_step = sampler.advance(params, sampler.start(*args, 0), settings, 1, 256).tokens
    np.testing.assert_array_equal(np.asarray(one_pass), np.asarray(step_by_step))
    np.testing.assert_array_equal(np.asarray(one_pass)[:, :prefix], np.asarray(known)[:, :prefix])


def test_any_mask_and_any_kept_prefix_use_the_same_programs(tiny, count_compilations):
    model, params, tokenizer = tiny
    prompts = tokenizer(["a cat", "a dog"])
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    sample_image_tokens(model, params, prompts, keys, codebook_size=64).block_until_ready()
    with count_compilations() as counter:
        for rows_kept in (0, 3, 8, 15, 16):
            kept = np.zeros((2, 256), bool)
            kept[:, :16 * rows_kept] = True
            kept[1, 250:] = True
            sample_image_tokens(model, params, prompts, keys, known=_known(2, model, rows_kept), kept=kept,
                                codebook_size=64).block_until_ready()
    assert counter.count == 0


def test_the_kept_tokens_log_probability_is_what_the_model_gives_them(tiny):
    """The log-probability the loop adds up for kept tokens equals a teacher-forced pass's."""
    model, params, tokenizer = tiny
    prompts = tokenizer(["a cat"])
    settings = SamplingSettings(condition_scale=1.0)
    sampler = compiled_sampler(model, 64, False)
    known = _known(1, model, 3)
    kept = np.zeros((1, 256), bool)
    kept[0, 240:] = True
    arrays = settings.as_arrays(model.config)
    args = (params, prompts.input_ids, prompts.attention_mask, prompts.input_ids_uncond,
            prompts.attention_mask_uncond, jax.random.PRNGKey(0)[None], arrays, jnp.asarray(known),
            jnp.asarray(kept), 0)
    state = sampler.advance(params, sampler.start(*args), arrays, 1, 256)
    start_token = [[model.config.decoder_start_token_id]]
    inputs = np.concatenate([start_token, np.asarray(state.tokens)[:, :-1]], axis=1)
    logits = np.asarray(model.apply({"params": params}, prompts.input_ids, prompts.attention_mask, inputs),
                        np.float64)[0]
    logits[:, 64:] = -np.inf                    # what the tiny VQGAN cannot decode is never drawn
    if model.config.eos_token_id < logits.shape[-1]:
        logits[:, model.config.eos_token_id] = -np.inf
    top = logits.max(axis=-1, keepdims=True)
    logprobs = logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))
    expected = sum(logprobs[i, known[0, i]] for i in range(240, 256))
    assert float(state.kept_logprob[0]) == pytest.approx(expected, rel=1e-5)
