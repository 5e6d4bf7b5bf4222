"""Marian (the Helsinki-NLP `opus-mt-*` translators): a post-LN BART-style encoder-decoder, in Flax.

source ids ──encoder──► states ──decoder (teacher-forced, or one token at a time)──► logits over
the target vocabulary.

What the published checkpoints' flags mean, and what this module therefore does:
token embedding × sqrt(d_model) plus a fixed sinusoid table (positions from 0 in both halves,
sines then cosines, not interleaved); post-LN layers (x = LN(x + sublayer(x))), no embedding or
final norm; swish in the feed-forward; `logits = h · E_decoder^T + final_logits_bias`.
It reuses DalleBart's output-major `Dense` (kernels stay as PyTorch stores them: (out, in)).

Decoding recomputes the decoder over a fixed-size token buffer with a causal mask rather than
keeping a key/value cache: translation prompts are short (tens of tokens), and one compiled shape
per length bucket keeps new prompts from recompiling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nbkit.models.config import read_json
from nbkit.models.dallebart import Dense

_ACTIVATIONS = {"swish": nn.swish, "silu": nn.swish, "relu": nn.relu,
                "gelu": partial(nn.gelu, approximate=False)}


@dataclass(frozen=True)
class MarianConfig:
    """The keys of a Marian config.json that change the computation."""

    vocab_size: int
    decoder_vocab_size: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    max_position_embeddings: int
    pad_token_id: int
    eos_token_id: int
    decoder_start_token_id: int
    activation_function: str = "swish"
    scale_embedding: bool = True
    share_encoder_decoder_embeddings: bool = True

    def __post_init__(self):
        if self.activation_function not in _ACTIVATIONS:
            raise ValueError(f"config.json: activation_function {self.activation_function!r} is not one of "
                             f"{sorted(_ACTIVATIONS)}; this is not a Marian checkpoint nbkit can read.")
        if self.d_model % self.encoder_attention_heads or self.d_model % self.decoder_attention_heads:
            raise ValueError("config.json: d_model must be a multiple of the attention heads.")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MarianConfig:
        if values.get("model_type", "marian") != "marian":
            raise ValueError(f"config.json: model_type is {values.get('model_type')!r}, not 'marian'.")
        for flag, wanted in (("normalize_before", False), ("normalize_embedding", False),
                             ("add_final_layer_norm", False)):
            if values.get(flag, wanted) != wanted:
                raise ValueError(f"config.json: {flag}={values[flag]} is not the opus-mt layout nbkit reads.")
        fields = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        fields.setdefault("decoder_vocab_size", values.get("vocab_size"))
        missing = [name for name in ("vocab_size", "d_model", "encoder_layers", "decoder_layers",
                                     "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim",
                                     "decoder_ffn_dim", "max_position_embeddings", "pad_token_id",
                                     "eos_token_id", "decoder_start_token_id") if name not in fields]
        if missing:
            raise ValueError(f"config.json lacks {', '.join(missing)}: not a Marian config.")
        return cls(**fields)

    @classmethod
    def from_folder(cls, folder: str | Path) -> MarianConfig:
        return cls.from_dict(read_json(Path(folder) / "config.json", "the translator's architecture"))


# The opus-mt base size, for the registry's memory figures and the benchmark (random weights).
PUBLISHED_ARCHITECTURES = {
    "opus-mt-base": MarianConfig(vocab_size=65001, decoder_vocab_size=65001, d_model=512, encoder_layers=6,
                                 decoder_layers=6, encoder_attention_heads=8, decoder_attention_heads=8,
                                 encoder_ffn_dim=2048, decoder_ffn_dim=2048, max_position_embeddings=512,
                                 pad_token_id=65000, eos_token_id=0, decoder_start_token_id=65000),
}


def sinusoid_table(positions: int, width: int) -> np.ndarray:
    """(positions, width): sin(p / 10000^(2i/width)) in the first half, cos in the second."""
    half = width // 2
    rates = 1.0 / np.power(10000.0, 2 * np.arange(half, dtype=np.float64) / width)
    angles = np.arange(positions, dtype=np.float64)[:, None] * rates[None, :]
    table = np.zeros((positions, width), np.float64)
    table[:, :half] = np.sin(angles)
    table[:, half:2 * half] = np.cos(angles)
    return table.astype(np.float32)


class MarianAttention(nn.Module):
    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, source, bias):
        width = x.shape[-1]
        head_dim = width // self.heads
        dense = partial(Dense, features=width, use_bias=True, dtype=self.dtype)
        split = lambda t: t.reshape(t.shape[:2] + (self.heads, head_dim)).transpose(0, 2, 1, 3)
        query = split(dense(name="q_proj")(x) * head_dim ** -0.5)
        keys, values = split(dense(name="k_proj")(source)), split(dense(name="v_proj")(source))
        scores = jnp.einsum("bhqd,bhkd->bhqk", query, keys).astype(jnp.float32) + bias
        weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        output = jnp.einsum("bhqk,bhkd->bhqd", weights, values).transpose(0, 2, 1, 3)
        return dense(name="out_proj")(output.reshape(x.shape[:2] + (width,)))


class _FeedForward(nn.Module):
    ffn_dim: int
    activation: str
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        hidden = _ACTIVATIONS[self.activation](Dense(self.ffn_dim, True, self.dtype, name="fc1")(x))
        return Dense(x.shape[-1], True, self.dtype, name="fc2")(hidden)


def _layer_norm(dtype, name):
    return nn.LayerNorm(epsilon=1e-5, dtype=dtype, name=name)


class MarianEncoderLayer(nn.Module):
    config: MarianConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, bias):
        c = self.config
        x = _layer_norm(self.dtype, "self_attn_layer_norm")(
            x + MarianAttention(c.encoder_attention_heads, self.dtype, name="self_attn")(x, x, bias))
        return _layer_norm(self.dtype, "final_layer_norm")(
            x + _FeedForward(c.encoder_ffn_dim, c.activation_function, self.dtype, name="ffn")(x))


class MarianDecoderLayer(nn.Module):
    config: MarianConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, self_bias, states, source_bias):
        c = self.config
        heads = c.decoder_attention_heads
        x = _layer_norm(self.dtype, "self_attn_layer_norm")(
            x + MarianAttention(heads, self.dtype, name="self_attn")(x, x, self_bias))
        x = _layer_norm(self.dtype, "encoder_attn_layer_norm")(
            x + MarianAttention(heads, self.dtype, name="encoder_attn")(x, states, source_bias))
        return _layer_norm(self.dtype, "final_layer_norm")(
            x + _FeedForward(c.decoder_ffn_dim, c.activation_function, self.dtype, name="ffn")(x))


def _padding_bias(mask: jax.Array) -> jax.Array:
    """(batch, keys) 1/0 mask → additive bias over heads and queries; finite, so that a fully
    masked row cannot make NaNs."""
    return jnp.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(jnp.float32)


class Marian(nn.Module):
    """`encode(ids, mask)` → states; `decode(tokens, states, mask)` → logits for every position."""

    config: MarianConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        init = nn.initializers.normal(0.02)
        self.encoder_embed = self.param("encoder_embed_tokens", init, (c.vocab_size, c.d_model))
        self.decoder_embed = (self.encoder_embed if c.share_encoder_decoder_embeddings else
                              self.param("decoder_embed_tokens", init, (c.decoder_vocab_size, c.d_model)))
        self.final_logits_bias = self.param("final_logits_bias", nn.initializers.zeros,
                                            (c.decoder_vocab_size,))
        self.encoder_layers = [MarianEncoderLayer(c, self.dtype, name=f"encoder_layers_{i}")
                               for i in range(c.encoder_layers)]
        self.decoder_layers = [MarianDecoderLayer(c, self.dtype, name=f"decoder_layers_{i}")
                               for i in range(c.decoder_layers)]

    def _embed(self, table, ids):
        c = self.config
        scale = math.sqrt(c.d_model) if c.scale_embedding else 1.0
        positions = jnp.asarray(sinusoid_table(c.max_position_embeddings, c.d_model))[: ids.shape[1]]
        return (jnp.take(table, ids, axis=0) * scale + positions[None]).astype(self.dtype)

    def encode(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        x = self._embed(self.encoder_embed, input_ids)
        bias = _padding_bias(attention_mask)
        for layer in self.encoder_layers:
            x = layer(x, bias)
        return x

    def decode(self, tokens: jax.Array, states: jax.Array, attention_mask: jax.Array,
               position: jax.Array | None = None) -> jax.Array:
        """Causal decoder over all of `tokens` (batch, length) → (batch, length, target vocab) logits, or
        (batch, target vocab) at `position` only (the output projection is most of a step's work)."""
        length = tokens.shape[1]
        causal = jnp.where(jnp.tril(jnp.ones((length, length), bool)), 0.0, -1e9)[None, None]
        source_bias = _padding_bias(attention_mask)
        x = self._embed(self.decoder_embed, tokens)
        for layer in self.decoder_layers:
            x = layer(x, causal, states, source_bias)
        if position is not None:
            x = jax.lax.dynamic_index_in_dim(x, position, axis=1, keepdims=False)
            logits = jnp.einsum("bd,vd->bv", x, self.decoder_embed.astype(self.dtype))
            return logits.astype(jnp.float32) + self.final_logits_bias[None]
        logits = jnp.einsum("bld,vd->blv", x, self.decoder_embed.astype(self.dtype))
        return logits.astype(jnp.float32) + self.final_logits_bias[None, None]

    def __call__(self, input_ids, attention_mask, decoder_input_ids):
        return self.decode(decoder_input_ids, self.encode(input_ids, attention_mask), attention_mask)


def marian_key(torch_name: str) -> tuple[str, ...] | None:
    """A PyTorch Marian weight name → its Flax path, or None for tensors the model recomputes or ties
    (the sinusoid tables, `lm_head`, the shared table's per-side aliases)."""
    name = torch_name.removeprefix("model.")
    if name == "final_logits_bias":
        return ("final_logits_bias",)
    if name in ("shared.weight", "encoder.embed_tokens.weight"):
        return ("encoder_embed_tokens",)
    if name == "decoder.embed_tokens.weight":
        return ("decoder_embed_tokens",)
    parts = name.split(".")
    if len(parts) >= 5 and parts[0] in ("encoder", "decoder") and parts[1] == "layers":
        layer = f"{parts[0]}_layers_{parts[2]}"
        rest = parts[3:]
        leaf = {"weight": "kernel", "bias": "bias"}
        if rest[0] in ("fc1", "fc2"):
            return (layer, "ffn", rest[0], leaf[rest[1]])
        if rest[0].endswith("layer_norm"):
            return (layer, rest[0], {"weight": "scale", "bias": "bias"}[rest[1]])
        return (layer, rest[0], rest[1], leaf[rest[2]])
    return None


def param_shapes(model: Marian) -> dict:
    """The parameter tree's shapes, without computing anything."""
    ids = jnp.zeros((1, 2), jnp.int32)
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, jnp.ones((1, 2), jnp.int32), ids))[
        "params"]
