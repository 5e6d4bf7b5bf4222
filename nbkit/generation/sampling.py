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
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nbkit.generation.sharding import DATA
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

    @property
    def super_conditioned(self) -> bool:
        """Whether the unconditioned rows are needed: at scale 1 the mix is the conditioned logits."""
        return self.condition_scale != 1

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


def _mix_and_filter(logits, settings, super_conditioned, codebook_size, eos_token_id):
    """Super-conditioning, then masking of what is not an image code, then filtering.

    Super-conditioned rows come in pairs, (conditioned, unconditioned) for each image, so that the
    two halves of an image sit next to each other on the same device when rows are split over a mesh.
    """
    logits = logits[:, -1]
    if super_conditioned:
        pairs = logits.reshape(-1, 2, logits.shape[-1])
        cond, uncond = pairs[:, 0], pairs[:, 1]
        scale = settings["condition_scale"]
        logits = uncond + scale * (cond - uncond)
    vocab = logits.shape[-1]
    never = jnp.arange(vocab) == eos_token_id  # as the reference's min-length rule
    if codebook_size is not None:
        never |= jnp.arange(vocab) >= codebook_size
    logits = jnp.where(never, -jnp.inf, logits)
    return filter_logits(logits, settings["temperature"], settings["top_k"], settings["top_p"])


@struct.dataclass
class SamplerState:
    """Everything the loop carries from one token to the next, for one batch of images."""

    tokens: jax.Array        # (images, image_length) int32: drawn so far, zeros after
    cache: Any               # per decoder layer {"self_k", "self_v"}: (rows, heads, image_length, head_dim)
    keys: jax.Array          # (2,) one key for the batch, or (images, 2) one per image
    text_mask: jax.Array     # (rows, text_length) the prompts' attention mask, as the decoder's rows


@dataclass(frozen=True)
class CompiledSampler:
    """The sampling loop for one architecture and dtype, as two compiled programs.

    `start` encodes the prompts, projects their cross-attention keys/values into the cache and
    draws the first token; `advance` draws tokens `begin`..`end` - 1. One `advance` over the whole
    range is the fast path; several shorter ones let a caller look at (or stop) the images as they
    form, at no cost when nobody does. Both take traced values only, so new prompts, settings, seeds
    or step ranges never recompile.

    `super_conditioned=False` is the program for condition scale 1, which equals the conditioned
    logits alone: it runs no unconditioned rows (half the work), as the reference does.
    """

    start: Any     # (params, TokenizedPrompts-like arrays, keys, settings) -> SamplerState
    advance: Any   # (params, state, settings, begin, end) -> SamplerState (the state is donated)
    image_length: int
    super_conditioned: bool

    def __call__(self, params, input_ids, attention_mask, input_ids_uncond, attention_mask_uncond, keys, settings):
        state = self.start(params, input_ids, attention_mask, input_ids_uncond, attention_mask_uncond, keys, settings)
        return self.advance(params, state, settings, 1, self.image_length).tokens


@lru_cache(maxsize=16)
def compiled_sampler(model: DalleBart, codebook_size: int | None = None, super_conditioned: bool = True,
                     mesh: Mesh | None = None) -> CompiledSampler:
    """The jitted sampling loop; calling it returns (batch, image_length) tokens.

    Arguments: params, input_ids, attention_mask, input_ids_uncond, attention_mask_uncond, keys,
    settings (from `SamplingSettings.as_arrays`). Tokens ≥ `codebook_size` (entries the VQGAN
    cannot decode) are never drawn. With a `mesh`, the decoder's rows (and its cache) stay split
    over the mesh's data axis: each device keeps its own images' rows, both halves of each.
    """
    config = model.config
    rows_of = 2 if super_conditioned else 1

    def keep_rows_split(tree):
        if mesh is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, PartitionSpec(DATA)))

    def step(params, tokens, index, cache, text_mask, text_states=None):
        return model.apply({"params": params}, tokens, index, cache, text_mask, text_states, method=DalleBart.decode)

    def pick_here(logits, keys, settings):
        logits = _mix_and_filter(logits, settings, super_conditioned, codebook_size, config.eos_token_id)
        return _draw(logits, keys)

    def pick(logits, keys, settings):
        """Each device mixes, filters and draws its own rows (XLA would gather the rows for a sort)."""
        if mesh is None or keys.ndim == 1:      # one key for the batch draws all rows at once
            return pick_here(logits, keys, settings)
        rows, whole = PartitionSpec(DATA), PartitionSpec()
        return jax.shard_map(pick_here, mesh=mesh, in_specs=(rows, rows, whole), out_specs=(rows, rows),
                             check_vma=False)(logits, keys, settings)

    def decoder_rows(conditioned, unconditioned):
        """(images, ...) twice → (images·2, ...) as (cond, uncond) pairs; or the conditioned rows alone."""
        if not super_conditioned:
            return conditioned
        return jnp.stack([conditioned, unconditioned], axis=1).reshape(-1, *conditioned.shape[1:])

    def start(params, input_ids, attention_mask, input_ids_uncond, attention_mask_uncond, keys, settings):
        images = input_ids.shape[0]
        text_ids = keep_rows_split(decoder_rows(input_ids, input_ids_uncond))
        text_mask = keep_rows_split(decoder_rows(attention_mask, attention_mask_uncond))
        text_states = model.apply({"params": params}, text_ids, text_mask, method=DalleBart.encode)
        first_tokens = jnp.full((rows_of * images, 1), config.decoder_start_token_id, jnp.int32)
        cache = keep_rows_split(empty_cache(config, rows_of * images, model.dtype))
        logits, cache = step(params, first_tokens, 0, cache, text_mask, text_states)
        first, keys = pick(logits, keys, settings)
        tokens = jnp.zeros((images, config.image_length), jnp.int32).at[:, 0].set(first)
        return SamplerState(keep_rows_split(tokens), keep_rows_split(cache), keys, text_mask)

    def advance(params, state, settings, begin, end):
        def body(index, state):
            previous = jnp.repeat(state.tokens[:, index - 1], rows_of)[:, None]
            logits, cache = step(params, previous, index, state.cache, state.text_mask)
            token, keys = pick(logits, state.keys, settings)
            return state.replace(tokens=state.tokens.at[:, index].set(token), cache=keep_rows_split(cache),
                                 keys=keys)

        return jax.lax.fori_loop(begin, end, body, state)

    return CompiledSampler(jax.jit(start), jax.jit(advance, donate_argnums=1), config.image_length,
                           super_conditioned)


def sample_image_tokens(model: DalleBart, params: Any, prompts: TokenizedPrompts, keys: jax.Array,
                        settings: SamplingSettings = SamplingSettings(),
                        codebook_size: int | None = None) -> jax.Array:
    """(batch, image_length) image tokens for tokenized prompts.

    `keys`: one PRNG key for the batch (the reference's semantics) or one per prompt.
    """
    keys = jnp.asarray(keys)
    if keys.ndim == 2 and keys.shape[0] != len(prompts):
        raise ValueError(f"Got {keys.shape[0]} keys for {len(prompts)} prompts: give one key, or one per prompt.")
    sampler = compiled_sampler(model, codebook_size, settings.super_conditioned)
    return sampler(params, prompts.input_ids, prompts.attention_mask, prompts.input_ids_uncond,
                   prompts.attention_mask_uncond, keys, settings.as_arrays(model.config))
