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
        whole = isinstance(self.top_k, (int, np.integer)) and not isinstance(self.top_k, bool)
        if self.top_k is not None and (not whole or self.top_k < 1):
            raise ValueError(f"top_k must be a whole number ≥ 1 (got {self.top_k!r}); use a value as large "
                             "as the image vocabulary (e.g. 16384) to turn top-k filtering off.")
        if self.top_p is not None and not (_is_number(self.top_p) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1] (got {self.top_p!r}); 1 turns it off.")
        if not (_is_number(self.condition_scale) and self.condition_scale >= 0):
            raise ValueError(f"condition_scale must be a number ≥ 0 (got {self.condition_scale!r}); "
                             "1 means no "
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


def _split(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(keys for now, keys for later): one key for the batch, or one per row (shape (batch, 2))."""
    if keys.ndim == 1:
        return jax.random.split(keys)
    return jax.vmap(jax.random.split, out_axes=1)(keys)


def _draw(logits: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One token per row, and the keys for the next step.

    One key (shape (2,)) draws the whole batch at once, as the reference does; one key
    per row (shape (batch, 2)) makes each row independent of the others in the batch.
    """
    now, later = _split(keys)
    if keys.ndim == 1:
        return jax.random.categorical(now, logits, axis=-1), later
    return jax.vmap(lambda key, row: jax.random.categorical(key, row))(now, logits), later


def _mix(logits: jax.Array, settings, super_conditioned: bool) -> jax.Array:
    """The last position's logits; super-conditioned: uncond + scale · (cond − uncond).

    Super-conditioned rows come in pairs, (conditioned, unconditioned) for each image, so that the
    two halves of an image sit next to each other on the same device when rows are split over a mesh.
    """
    logits = logits[:, -1]
    if not super_conditioned:
        return logits
    pairs = logits.reshape(-1, 2, logits.shape[-1])
    cond, uncond = pairs[:, 0], pairs[:, 1]
    return uncond + settings["condition_scale"] * (cond - uncond)


def _never_drawn(logits: jax.Array, codebook_size: int | None, eos_token_id: int) -> jax.Array:
    """Masks what is not an image code: the end token (as the reference's min-length rule) and codes
    the VQGAN cannot decode."""
    vocab = logits.shape[-1]
    never = jnp.arange(vocab) == eos_token_id
    if codebook_size is not None:
        never |= jnp.arange(vocab) >= codebook_size
    return jnp.where(never, -jnp.inf, logits)


@struct.dataclass
class SamplerState:
    """Everything the loop carries from one token to the next, for one batch of images."""

    tokens: jax.Array        # (images, image_length) int32: drawn or kept so far, zeros after
    cache: Any               # per decoder layer {"self_k", "self_v", …}: (rows, heads, positions, head_dim)
    keys: jax.Array          # (2,) one key for the batch, or (images, 2) one per image
    text_mask: jax.Array     # (rows, text_length) the prompts' attention mask, as the decoder's rows
    known: jax.Array         # (images, image_length) int32: the tokens to keep where `kept`
    kept: jax.Array          # (images, image_length) bool: positions that are never drawn
    kept_logprob: jax.Array  # (images,) float32: the model's log-probability of the kept tokens it saw


# A kept prefix is run through the decoder this many positions (one row of the token grid) per call:
# its cost grows with the prefix, and the number of calls is a traced value, so one program serves
# any prefix.
PREFILL_CHUNK = 16


@dataclass(frozen=True)
class CompiledSampler:
    """The sampling loop for one architecture and dtype, as two compiled programs.

    `start` encodes the prompts, projects their cross-attention keys/values into the cache, draws
    the first token and runs a kept prefix through the decoder; `advance` draws tokens
    `begin`..`end` - 1. One `advance` over the whole range is the fast path; several shorter ones
    let a caller look at (or stop) the images as they form, at no cost when nobody does. Both take
    traced values only, so new prompts, settings, seeds, kept tokens, masks or step ranges never
    recompile.

    Kept tokens (`known` where `kept`) are never drawn: the output holds them exactly and the model
    conditions on them as if it had drawn them. The random keys advance at every position, kept or
    not, so an image's draws do not depend on how its kept prefix was computed.

    `super_conditioned=False` is the program for condition scale 1, which equals the conditioned
    logits alone: it runs no unconditioned rows (half the work), as the reference does.
    """

    # (params, ids, mask, ids_uncond, mask_uncond, keys, settings, known, kept, prefix) -> SamplerState
    start: Any
    advance: Any   # (params, state, settings, begin, end) -> SamplerState (the state is donated)
    image_length: int
    super_conditioned: bool

    def __call__(self, params, input_ids, attention_mask, input_ids_uncond, attention_mask_uncond, keys,
                 settings, known=None, kept=None):
        images, length = input_ids.shape[0], self.image_length
        known = jnp.zeros((images, length), jnp.int32) if known is None else jnp.asarray(known, jnp.int32)
        kept = jnp.zeros((images, length), bool) if kept is None else jnp.asarray(kept, bool)
        prefix = kept_prefix(np.asarray(kept))
        state = self.start(params, input_ids, attention_mask, input_ids_uncond, attention_mask_uncond, keys,
                           settings, known, kept, prefix)
        return self.advance(params, state, settings, max(prefix, 1), length).tokens


def kept_prefix(kept: np.ndarray) -> int:
    """How many positions from the start every row keeps: what `start` can run in one pass."""
    leading = np.cumprod(np.asarray(kept, bool), axis=1).sum(axis=1)
    return int(leading.min()) if len(leading) else 0


@lru_cache(maxsize=16)
def compiled_sampler(model: DalleBart, codebook_size: int | None = None, super_conditioned: bool = True,
                     mesh: Mesh | None = None) -> CompiledSampler:
    """The jitted sampling loop; calling it returns (batch, image_length) tokens.

    Tokens ≥ `codebook_size` (entries the VQGAN cannot decode) are never drawn. With a `mesh`, the
    decoder's rows (and its cache) stay split over the mesh's data axis: each device keeps its own
    images' rows, both halves of each, and mixes, filters and draws them itself.
    """
    config = model.config
    rows_of = 2 if super_conditioned else 1

    def keep_rows_split(tree):
        if mesh is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, PartitionSpec(DATA)))

    def step(params, tokens, index, cache, text_mask, text_states=None):
        return model.apply({"params": params}, tokens, index, cache, text_mask, text_states,
                           method=DalleBart.decode)

    def pick_here(logits, keys, settings, known, kept):
        """This position's token per image (kept, or drawn) and the kept token's log-probability."""
        mixed = _never_drawn(_mix(logits, settings, super_conditioned), codebook_size, config.eos_token_id)
        filtered = filter_logits(mixed, settings["temperature"], settings["top_k"], settings["top_p"])
        drawn, keys = _draw(filtered, keys)
        logprob = jnp.take_along_axis(jax.nn.log_softmax(mixed), known[:, None], axis=-1)[:, 0]
        return jnp.where(kept, known, drawn), keys, jnp.where(kept, logprob, 0.0)

    def pick(logits, keys, settings, known, kept):
        """Each device picks for its own rows (XLA would gather the rows for a sort)."""
        if mesh is None or keys.ndim == 1:      # one key for the batch draws all rows at once
            return pick_here(logits, keys, settings, known, kept)
        rows, whole = PartitionSpec(DATA), PartitionSpec()
        return jax.shard_map(pick_here, mesh=mesh, in_specs=(rows, rows, whole, rows, rows),
                             out_specs=(rows, rows, rows), check_vma=False)(logits, keys, settings, known,
                                                                            kept)

    def decoder_rows(conditioned, unconditioned=None):
        """(images, ...) → (images·2, ...) as (cond, uncond) pairs (the same tokens twice when no
        unconditioned values are given); or the conditioned rows alone."""
        if not super_conditioned:
            return conditioned
        unconditioned = conditioned if unconditioned is None else unconditioned
        return jnp.stack([conditioned, unconditioned], axis=1).reshape(-1, *conditioned.shape[1:])

    def prefill(params, cache, text_mask, known, prefix):
        """Runs the kept prefix through the decoder, a row of the token grid per call, so the cache
        holds every position before `prefix` (later positions it writes are overwritten before
        they are read)."""
        inputs = jnp.concatenate([jnp.full((known.shape[0], 1), config.decoder_start_token_id, jnp.int32),
                                  known[:, :-1]], axis=1)
        inputs = decoder_rows(inputs)

        def chunk(c, cache):
            tokens = jax.lax.dynamic_slice_in_dim(inputs, c * PREFILL_CHUNK, PREFILL_CHUNK, axis=1)
            return keep_rows_split(step(params, tokens, c * PREFILL_CHUNK, cache, text_mask)[1])

        return jax.lax.fori_loop(0, (prefix + PREFILL_CHUNK - 1) // PREFILL_CHUNK, chunk, cache)

    def start(params, input_ids, attention_mask, input_ids_uncond, attention_mask_uncond, keys, settings,
              known, kept, prefix):
        images = input_ids.shape[0]
        text_ids = keep_rows_split(decoder_rows(input_ids, input_ids_uncond))
        text_mask = keep_rows_split(decoder_rows(attention_mask, attention_mask_uncond))
        text_states = model.apply({"params": params}, text_ids, text_mask, method=DalleBart.encode)
        first_tokens = jnp.full((rows_of * images, 1), config.decoder_start_token_id, jnp.int32)
        cache = keep_rows_split(empty_cache(config, rows_of * images, model.dtype))
        logits, cache = step(params, first_tokens, 0, cache, text_mask, text_states)
        first, keys, logprob = pick(logits, keys, settings, known[:, 0], kept[:, 0])
        cache = prefill(params, cache, text_mask, known, prefix)
        # The keys advance once per position, as if the kept prefix had been forced step by step.
        keys = jax.lax.fori_loop(1, prefix, lambda _, keys: _split(keys)[1], keys)
        tokens = jnp.where(kept, known, 0).at[:, 0].set(first)
        return SamplerState(keep_rows_split(tokens), keep_rows_split(cache), keys, text_mask, known, kept,
                            logprob)

    def advance(params, state, settings, begin, end):
        def body(index, state):
            previous = jnp.repeat(state.tokens[:, index - 1], rows_of)[:, None]
            logits, cache = step(params, previous, index, state.cache, state.text_mask)
            token, keys, logprob = pick(logits, state.keys, settings, state.known[:, index],
                                        state.kept[:, index])
            return state.replace(tokens=state.tokens.at[:, index].set(token), cache=keep_rows_split(cache),
                                 keys=keys, kept_logprob=state.kept_logprob + logprob)

        return jax.lax.fori_loop(begin, end, body, state)

    return CompiledSampler(jax.jit(start), jax.jit(advance, donate_argnums=1), config.image_length,
                           super_conditioned)


def sample_image_tokens(model: DalleBart, params: Any, prompts: TokenizedPrompts, keys: jax.Array,
                        settings: SamplingSettings = SamplingSettings(), codebook_size: int | None = None,
                        known: Any = None, kept: Any = None) -> jax.Array:
    """(batch, image_length) image tokens for tokenized prompts.

    `keys`: one PRNG key for the batch (the reference's semantics) or one per prompt. `known` and
    `kept` ((batch, image_length) tokens and booleans): positions to keep rather than draw.
    """
    keys = jnp.asarray(keys)
    if keys.ndim == 2 and keys.shape[0] != len(prompts):
        raise ValueError(f"Got {keys.shape[0]} keys for {len(prompts)} prompts: give one key, or one per "
                         "prompt.")
    sampler = compiled_sampler(model, codebook_size, settings.super_conditioned)
    return sampler(params, prompts.input_ids, prompts.attention_mask, prompts.input_ids_uncond,
                   prompts.attention_mask_uncond, keys, settings.as_arrays(model.config), known, kept)
