"""Image tokens from text tokens: the whole autoregressive loop as one compiled function.

Each step runs the conditioned and the unconditioned (empty prompt) rows through ONE
decoder call, mixes their logits ("super-conditioning": uncond + scale · (cond − uncond)),
then applies temperature → top-k → top-p, as the reference `generate` does, and draws
a token. Sampling settings are traced values: changing them never recompiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nbkit.models.dallebart import DalleBart, DalleBartConfig, empty_cache
from nbkit.text.tokenizer import TokenizedPrompts


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)


@dataclass(frozen=True)
class SamplingSettings:
    """How to draw image tokens. A setting left as None takes the model's default
    from its config.json (for the published models: temperature 1, top-k 50, top-p off),
    exactly as the reference `generate` does.
    """

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    condition_scale: float = 10.0

    def __post_init__(self):
        if self.temperature is not None and not (_is_number(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a number > 0 (got {self.temperature!r}); 1.0 samples "
                             "as trained, lower is more conservative, higher more varied.")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, np.integer))
                                       or self.top_k < 1):
            raise ValueError(f"top_k must be a whole number ≥ 1 (got {self.top_k!r}); use a value as large "
                             "as the image vocabulary (e.g. 16384) to turn top-k filtering off.")
        if self.top_p is not None and not (_is_number(self.top_p) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1] (got {self.top_p!r}); 1 turns it off.")
        if not (_is_number(self.condition_scale) and self.condition_scale >= 0):
            raise ValueError(f"condition_scale must be a number ≥ 0 (got {self.condition_scale!r}); 1 means no "
                             "super-conditioning, the official notebook uses 10.")

    def as_arrays(self, defaults: DalleBartConfig) -> dict[str, jax.Array]:
        """Traced values, with unset settings taken from the model's config."""
        pick = lambda value, default: default if value is None else value
        return {
            "temperature": jnp.float32(pick(self.temperature, defaults.temperature)),
            "top_k": jnp.int32(pick(self.top_k, defaults.top_k)),
            "top_p": jnp.float32(pick(self.top_p, defaults.top_p)),
            "condition_scale": jnp.float32(self.condition_scale),
        }


# Top-k/top-p need the best logits in order. A full sort of a 16k vocabulary costs
# ~10 ms per step on CPU; a partial top-k of this many candidates ~0.4 ms. The full
# sort is used only when top-k keeps more than this.
_PARTIAL_SORT_CANDIDATES = 256


def filter_logits(logits: jax.Array, temperature, top_k, top_p) -> jax.Array:
    """Temperature, then top-k, then top-p (nucleus), on (batch, vocab) logits.

    Filtered-out entries become -inf. top_k ≤ 0 and top_p ≥ 1 turn those filters off.
    Ties at the cut-off are all kept.
    """
    logits = logits / temperature
    vocab = logits.shape[-1]
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    candidates = min(_PARTIAL_SORT_CANDIDATES, vocab)

    def lowest_kept(best_first):
        """The smallest logit that survives both filters, from the best logits in order."""
        best_first = jnp.where(jnp.arange(best_first.shape[-1]) < k, best_first, -jnp.inf)
        # Top-p keeps the most likely tokens until their probability reaches top_p,
        # including the one that crosses it.
        cumulative = jnp.cumsum(jax.nn.softmax(best_first, axis=-1), axis=-1)
        in_nucleus = 1 + jnp.sum(cumulative[..., :-1] < top_p, axis=-1, keepdims=True)
        kept = jnp.where(top_p < 1.0, jnp.minimum(in_nucleus, k), k)
        return jnp.take_along_axis(best_first, kept - 1, axis=-1)

    threshold = jax.lax.cond(
        k <= candidates,
        lambda: lowest_kept(jax.lax.top_k(logits, candidates)[0]),
        lambda: lowest_kept(-jnp.sort(-logits, axis=-1)),
    )
    return jnp.where(logits >= threshold, logits, -jnp.inf)


def _draw(logits: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One token per row, and the keys for the next step.

    One key (shape (2,)) draws the whole batch at once, as the reference does; one key
    per row (shape (batch, 2)) makes each row independent of the others in the batch.
    """
    if keys.ndim == 1:
        now, later = jax.random.split(keys)
        return jax.random.categorical(now, logits, axis=-1), later
    now, later = jax.vmap(jax.random.split, out_axes=1)(keys)
    return jax.vmap(lambda key, row: jax.random.categorical(key, row))(now, logits), later


def _mix_and_filter(logits, settings, rows, codebook_size, eos_token_id):
    """Super-conditioning, then masking of what is not an image code, then filtering."""
    cond, uncond = logits[:rows, -1], logits[rows:, -1]
    scale = settings["condition_scale"]
    logits = jnp.where(scale == 1.0, cond, uncond + scale * (cond - uncond))
    vocab = logits.shape[-1]
    never = jnp.arange(vocab) == eos_token_id  # as the reference's min-length rule
    if codebook_size is not None:
        never |= jnp.arange(vocab) >= codebook_size
    logits = jnp.where(never, -jnp.inf, logits)
    return filter_logits(logits, settings["temperature"], settings["top_k"], settings["top_p"])


@dataclass(frozen=True)
class CompiledSampler:
    """The sampling loop for one architecture and dtype, as two compiled programs.

    `start` encodes the prompts, projects their cross-attention keys/values into the cache
    and draws the first token; `advance` draws tokens `begin`..`end` - 1. One `advance` over
    the whole range is the fast path; several shorter ones let a caller look at (or stop)
    the images as they form, at no cost when nobody does. Both take traced values only, so
    new prompts, settings, seeds or step ranges never recompile.
    """

    start: Any     # (params, input_ids, attention_mask, input_ids_uncond, attention_mask_uncond, keys, settings) -> state
    advance: Any   # (params, state, text_mask, settings, begin, end) -> state
    image_length: int

    def __call__(self, params, input_ids, attention_mask, input_ids_uncond, attention_mask_uncond, keys, settings):
        state = self.start(params, input_ids, attention_mask, input_ids_uncond, attention_mask_uncond, keys, settings)
        text_mask = jnp.concatenate([attention_mask, attention_mask_uncond])
        return self.advance(params, state, text_mask, settings, 1, self.image_length)[0]


@lru_cache(maxsize=16)
def compiled_sampler(model: DalleBart, codebook_size: int | None = None) -> CompiledSampler:
    """The jitted sampling loop; calling it returns (batch, image_length) tokens.

    Arguments: params, input_ids, attention_mask, input_ids_uncond, attention_mask_uncond,
    keys, settings (from `SamplingSettings.as_arrays`). The state between steps is
    (tokens so far, key/value cache, keys). Tokens ≥ `codebook_size` (entries the VQGAN
    cannot decode) are never drawn.
    """
    config = model.config

    def step(params, tokens, index, cache, text_mask, text_states=None):
        return model.apply({"params": params}, tokens, index, cache, text_mask, text_states, method=DalleBart.decode)

    def pick(logits, keys, settings):
        rows = logits.shape[0] // 2
        logits = _mix_and_filter(logits, settings, rows, codebook_size, config.eos_token_id)
        return _draw(logits, keys)

    def start(params, input_ids, attention_mask, input_ids_uncond, attention_mask_uncond, keys, settings):
        rows = input_ids.shape[0]
        text_ids = jnp.concatenate([input_ids, input_ids_uncond])
        text_mask = jnp.concatenate([attention_mask, attention_mask_uncond])
        text_states = model.apply({"params": params}, text_ids, text_mask, method=DalleBart.encode)
        first_tokens = jnp.full((2 * rows, 1), config.decoder_start_token_id, jnp.int32)
        logits, cache = step(params, first_tokens, 0, empty_cache(config, 2 * rows, model.dtype), text_mask, text_states)
        first, keys = pick(logits, keys, settings)
        return jnp.zeros((rows, config.image_length), jnp.int32).at[:, 0].set(first), cache, keys

    def advance(params, state, text_mask, settings, begin, end):
        def body(index, carry):
            sequences, cache, keys = carry
            previous = jnp.tile(sequences[:, index - 1], 2)[:, None]
            logits, cache = step(params, previous, index, cache, text_mask)
            token, keys = pick(logits, keys, settings)
            return sequences.at[:, index].set(token), cache, keys

        return jax.lax.fori_loop(begin, end, body, state)

    return CompiledSampler(jax.jit(start), jax.jit(advance, donate_argnums=1), config.image_length)


def sample_image_tokens(model: DalleBart, params: Any, prompts: TokenizedPrompts, keys: jax.Array,
                        settings: SamplingSettings = SamplingSettings(),
                        codebook_size: int | None = None) -> jax.Array:
    """(batch, image_length) image tokens for tokenized prompts.

    `keys`: one PRNG key for the batch (the reference's semantics) or one per prompt.
    """
    keys = jnp.asarray(keys)
    if keys.ndim == 2 and keys.shape[0] != len(prompts):
        raise ValueError(f"Got {keys.shape[0]} keys for {len(prompts)} prompts: give one key, or one per prompt.")
    sampler = compiled_sampler(model, codebook_size)
    return sampler(params, prompts.input_ids, prompts.attention_mask, prompts.input_ids_uncond,
                   prompts.attention_mask_uncond, keys, settings.as_arrays(model.config))
