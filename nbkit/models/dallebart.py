"""DalleBart: the BART-style encoder-decoder of DALL·E mini / Mega, in Flax.

text ids ──encoder──► states ──decoder (one image token at a time)──► logits over the
VQGAN codebook.

Written for fast token-by-token decoding:
- each layer has its own parameters and its own cache arrays (`layers_0`, ...), so a
  decoding step reads them in place; with layers stacked on one axis, XLA copies every
  layer's slice on every step;
- Dense kernels are kept output-major, (out, in): products with a few rows then run
  about twice as fast on CPU, and no slower elsewhere;
- products that share an input are fused (queries/keys/values; the GLU's two input
  projections): fewer, larger products;
- the cache holds the self-attention keys/values of the image tokens and the
  cross-attention keys/values of the text, projected once per prompt instead of once
  per token. New keys/values are written into the cache before attending to it, so
  that the cache is only ever updated in place.
Module names follow the published checkpoints; `nbkit.checkpoint` maps their layouts
(stacked or per-layer, input-major kernels, separate projections) onto this one.
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

from nbkit.models.config import CONFIG_FILE, config_from_dict, read_json

Cache = tuple[dict[str, jax.Array], ...]  # one dict per decoder layer

_ACTIVATIONS = {
    "gelu": partial(nn.gelu, approximate=False),
    "gelu_new": partial(nn.gelu, approximate=True),
    "relu": nn.relu,
    "swish": nn.swish,
    "silu": nn.swish,
}
_PRE_NORM = ("normformer", "cogview", "preln")  # norm before attention / feed-forward
_POST_NORM = ("normformer", "cogview")  # norm on the block's output, before the residual
_MID_NORM = ("normformer",)  # norm inside the feed-forward block


@dataclass(frozen=True)
class DalleBartConfig:
    """The architecture, read from a checkpoint's `config.json`."""

    encoder_vocab_size: int = 50264
    image_vocab_size: int = 16384
    image_length: int = 256
    max_text_length: int = 64
    d_model: int = 1024
    encoder_layers: int = 12
    decoder_layers: int = 12
    encoder_attention_heads: int = 16
    decoder_attention_heads: int = 16
    encoder_ffn_dim: int = 4096
    decoder_ffn_dim: int = 4096
    activation_function: str = "gelu"
    ln_type: str = "layernorm"
    ln_positions: str = "normformer"
    use_bias: bool = False
    use_glu: bool = True
    use_head_scale: bool = False
    scale_embedding: bool = False
    force_ln_scale: bool = False
    use_final_ln_encoder: bool = True
    use_final_ln_decoder: bool = True
    use_deepnet_scaling: bool = False
    use_absolute_position_embeddings: bool = True
    normalize_text: bool = False
    decoder_start_token_id: int | None = None  # defaults to image_vocab_size
    eos_token_id: int | None = None  # defaults to image_vocab_size + 1 (never a valid code)
    use_scan: bool | None = None  # how the file stores layers; we always compute stacked
    # Sampling defaults used when a setting is left unset. These are transformers'
    # config defaults, which the reference `generate` fell back to: top_k=None there
    # meant top-k 50, not "off".
    top_k: int = 50
    top_p: float = 1.0
    temperature: float = 1.0

    def __post_init__(self):
        if self.decoder_start_token_id is None:
            object.__setattr__(self, "decoder_start_token_id", self.image_vocab_size)
        if self.eos_token_id is None:
            object.__setattr__(self, "eos_token_id", self.image_vocab_size + 1)
        if self.ln_positions == "deepnet":
            object.__setattr__(self, "ln_positions", "postln")
        supported = {
            "ln_type": ("layernorm", "rmsnorm"),
            "ln_positions": ("normformer", "cogview", "preln", "postln"),
            "activation_function": tuple(_ACTIVATIONS),
        }
        for name, allowed in supported.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"config.json: {name}={getattr(self, name)!r} is not supported by nbkit "
                    f"(supported: {', '.join(allowed)})."
                )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DalleBartConfig:
        unsupported = {
            "use_cosine_attention": False, "use_swin_position_embeddings": False,
            "use_alibi": False, "tie_word_embeddings": False, "sinkhorn_iters": 1,
        }
        for name, default in unsupported.items():
            if values.get(name, default) != default:
                raise ValueError(
                    f"config.json: {name}={values[name]!r} is a training variant nbkit does not "
                    "implement; only the published DALL·E mini/Mega architectures are supported."
                )
        return config_from_dict(cls, values)

    @classmethod
    def from_folder(cls, folder: str | Path) -> DalleBartConfig:
        return cls.from_dict(read_json(Path(folder) / CONFIG_FILE,
                                       "a DalleBart model folder needs its config.json"))

    @property
    def decoder_vocab_size(self) -> int:
        """Image codes plus the start token (the lm_head predicts over the same range)."""
        return self.image_vocab_size + 1


# The architectures of the published checkpoints (their config.json, less the defaults),
# for benchmarks and memory estimates before anything is downloaded.
PUBLISHED_ARCHITECTURES = {
    "mini": DalleBartConfig(encoder_vocab_size=50264, image_vocab_size=16384, d_model=1024,
                            encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                            decoder_attention_heads=16, encoder_ffn_dim=2730, decoder_ffn_dim=2730,
                            normalize_text=True),
    "mega": DalleBartConfig(encoder_vocab_size=50272, image_vocab_size=16415, d_model=2048,
                            encoder_layers=24, decoder_layers=24, encoder_attention_heads=32,
                            decoder_attention_heads=32, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                            normalize_text=True),
}


class RMSNorm(nn.Module):
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    use_scale: bool = True

    @nn.compact
    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        if self.use_scale:
            y = y * self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        return y.astype(self.dtype)


def _norm(config: DalleBartConfig, dtype, use_scale: bool = True, name: str | None = None) -> nn.Module:
    """A LayerNorm or RMSNorm; unnamed ones get Flax's automatic names (LayerNorm_0, ...),
    which match the checkpoints because we create them in the reference order."""
    if config.ln_type == "rmsnorm":
        return RMSNorm(dtype=dtype, use_scale=use_scale, name=name)
    return nn.LayerNorm(epsilon=1e-5, dtype=dtype, use_scale=use_scale, name=name)


def _padding_bias(mask: jax.Array) -> jax.Array:
    """(batch, keys) mask of 1/0 → additive bias, broadcast over heads and queries."""
    return jnp.where(mask[:, None, None, :] > 0, 0.0, -jnp.inf).astype(jnp.float32)


# Products with at most this many rows run on CPU as a multiply-and-sum (see `few_row_product`).
FEW_ROWS = 32


def few_row_product(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x (..., in) · kernel (out, in)ᵀ → (..., out), in x's dtype, accumulated in float32.

    Decoding multiplies a few rows (2 per image) by every kernel: the work is reading the
    kernel. XLA:CPU's dot (YNNPACK / Eigen) prepares ("packs") the kernel on every call, so
    it read the decoder's weights at about a third of the memory's speed; written as a
    broadcast multiply summed over `in`, XLA fuses it into one loop that reads each kernel
    row once for all the rows (measured 2.2× faster at 8 rows, equal at 32: bench/bench_step.py).
    A kernel stored in a narrower dtype (bfloat16, int8) is widened inside that loop, so it is
    read at its stored size. Other platforms, and more rows, use the dot.
    """
    rows = math.prod(x.shape[:-1])

    def as_dot(x, kernel):
        return jnp.einsum("...i,oi->...o", x, kernel.astype(x.dtype))

    if rows > FEW_ROWS:
        return as_dot(x, kernel)

    def as_sum(x, kernel):
        flat = x.reshape(rows, x.shape[-1]).astype(jnp.float32)
        if kernel.dtype != jnp.float32:
            # Tied to this call's rows, the widening cannot be hoisted out of the decoding loop: XLA
            # otherwise moves the loop-invariant convert before the loop, which then reads a float32 copy.
            kernel, flat = jax.lax.optimization_barrier((kernel, flat))
        out_rows = jnp.sum(kernel[:, None, :].astype(jnp.float32) * flat[None], axis=-1)  # (out, rows)
        return out_rows.T.reshape(*x.shape[:-1], kernel.shape[0]).astype(x.dtype)

    return jax.lax.platform_dependent(x, kernel, cpu=as_sum, default=as_dot)


class Dense(nn.Module):
    """A linear layer whose kernel is stored (out, in); see the module docstring."""

    features: int
    use_bias: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.normal(0.02), (self.features, x.shape[-1]))
        y = few_row_product(x.astype(self.dtype), kernel)
        if self.has_variable("params", "kernel_scale"):   # int8 storage (nbkit.weights.stored)
            y = y * self.get_variable("params", "kernel_scale").astype(y.dtype)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
        return y


def _softmax_attention(query, keys, values, bias, dtype):
    """Scaled dot-product attention on (batch, heads, positions, head_dim) arrays.

    Heads before positions make each head's products plain matrix products, several
    times faster on CPU than with positions first.
    """
    scores = jnp.einsum("bhqd,bhkd->bhqk", query, keys) / jnp.sqrt(query.shape[-1]).astype(dtype)
    weights = jax.nn.softmax(scores.astype(jnp.float32) + bias, axis=-1).astype(dtype)
    return jnp.einsum("bhqk,bhkd->bhqd", weights, values)


class Attention(nn.Module):
    """Multi-head attention to keys/values projected from `source`, or held in `cached`.

    Self-attention (`source` is `x`) projects queries, keys and values in one product
    ("qkv_proj"); cross-attention projects keys and values together ("kv_proj").
    """

    heads: int
    use_bias: bool
    use_head_scale: bool
    dtype: Any
    self_attention: bool

    @nn.compact
    def __call__(self, x, bias, source=None, cached=None, cache_index=None):
        """Attends from `x` to:
        - the projections of `source` (no cache);
        - `cached` = (keys, values) as given (source None);
        - `cached` after writing the projections of `source` into it at `cache_index`.
        Returns the output and the keys/values attended to.
        """
        width = x.shape[-1]
        dense = partial(Dense, use_bias=self.use_bias, dtype=self.dtype)
        split_heads = lambda t: (t.reshape(t.shape[:2] + (self.heads, width // self.heads))
                                  .transpose(0, 2, 1, 3))
        if self.self_attention:
            query, keys, values = map(split_heads,
                                      jnp.split(dense(3 * width, name="qkv_proj")(x), 3, axis=-1))
        else:
            query = split_heads(dense(width, name="q_proj")(x))
            if source is None:
                keys, values = cached
            else:
                keys, values = map(split_heads,
                                   jnp.split(dense(2 * width, name="kv_proj")(source), 2, axis=-1))
        if source is not None:
            if cached is not None:
                write = lambda cache, new: jax.lax.dynamic_update_slice_in_dim(
                    cache, new.astype(cache.dtype), cache_index, axis=2)
                keys, values = write(cached[0], keys), write(cached[1], values)
        output = _softmax_attention(query, keys, values, bias, self.dtype)
        if self.use_head_scale:
            head_scale = self.param("head_scale", nn.initializers.ones, (1, 1, self.heads, 1))
            output = output * head_scale.transpose(0, 2, 1, 3)
        output = output.transpose(0, 2, 1, 3).reshape(x.shape[:2] + (width,))
        return dense(width, name="out_proj")(output), (keys, values)


class FeedForward(nn.Module):
    """The GLU (or plain) feed-forward block, with NormFormer's inner norms."""

    config: DalleBartConfig
    ffn_dim: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        config = self.config
        dense = partial(Dense, use_bias=config.use_bias, dtype=self.dtype)
        activation = _ACTIVATIONS[config.activation_function]
        if config.ln_positions in _PRE_NORM:
            x = _norm(config, self.dtype, config.force_ln_scale)(x)
        if config.use_glu:  # activation(x·W0) * (x·W1), W0 and W1 in one product
            gate, value = jnp.split(dense(2 * self.ffn_dim, name="Dense_0_1")(x), 2, axis=-1)
            hidden = activation(gate) * value
        else:
            hidden = activation(dense(self.ffn_dim, name="Dense_0")(x))
        if config.ln_positions in _MID_NORM:
            hidden = _norm(config, self.dtype, config.force_ln_scale)(hidden)
        x = dense(config.d_model, name="Dense_2" if config.use_glu else "Dense_1")(hidden)
        if config.ln_positions == "cogview":
            x = _norm(config, self.dtype)(x)
        return x


def _residual_gain(config: DalleBartConfig, part: str) -> float:
    """DeepNet's residual scaling (1 for every published checkpoint)."""
    if not config.use_deepnet_scaling:
        return 1.0
    if part == "encoder":
        return 0.81 * (config.encoder_layers**4 * config.decoder_layers) ** 0.0625
    return (3 * config.decoder_layers) ** 0.25


def _attention_block(config, dtype, x, attend, gain):
    """Norm, attention, norm, residual: in the order the config's ln_positions says."""
    residual = x
    if config.ln_positions in _PRE_NORM:
        x = _norm(config, dtype, config.force_ln_scale)(x)
    x, projected = attend(x)
    if config.ln_positions in _POST_NORM:
        x = _norm(config, dtype)(x)
    x = residual * gain + x
    if config.ln_positions == "postln":
        x = _norm(config, dtype)(x)
    return x, projected


def _feed_forward_block(config, dtype, x, ffn_dim, gain):
    # The checkpoints name the block after its kind: GLU_0 or FFN_0.
    block = FeedForward(config, ffn_dim, dtype, name="GLU_0" if config.use_glu else "FFN_0")
    x = x * gain + block(x)
    if config.ln_positions == "postln":
        x = _norm(config, dtype)(x)
    return x


class EncoderLayer(nn.Module):
    config: DalleBartConfig
    dtype: Any

    @nn.compact
    def __call__(self, x, bias):
        config, gain = self.config, _residual_gain(self.config, "encoder")
        attention = Attention(config.encoder_attention_heads, config.use_bias, config.use_head_scale,
                              self.dtype, self_attention=True, name="FlaxBartAttention_0")
        x, _ = _attention_block(config, self.dtype, x, lambda h: attention(h, bias, source=h), gain)
        return _feed_forward_block(config, self.dtype, x, config.encoder_ffn_dim, gain), None


class DecoderLayer(nn.Module):
    config: DalleBartConfig
    dtype: Any

    @nn.compact
    def __call__(self, x, cache, index, self_bias, text_bias, text_states):
        """Runs the image tokens `x` (at positions index, index+1, ...) through one layer.

        `cache` holds this layer's image keys/values ("self_k", "self_v") and, once the
        text is known, the text's ("cross_k", "cross_v"). The first call gives
        `text_states` instead, whose projections are then cached.
        Returns x and the updated cache.
        """
        config, gain = self.config, _residual_gain(self.config, "decoder")
        make_attention = partial(Attention, config.decoder_attention_heads, config.use_bias,
                                 config.use_head_scale, self.dtype)
        self_attention = make_attention(self_attention=True, name="FlaxBartAttention_0")
        cross_attention = make_attention(self_attention=False, name="FlaxBartAttention_1")

        image_kv = (cache["self_k"], cache["self_v"])
        x, (self_k, self_v) = _attention_block(
            config, self.dtype, x,
            lambda h: self_attention(h, self_bias, source=h, cached=image_kv, cache_index=index), gain)

        if text_states is None:
            text_kv = (cache["cross_k"], cache["cross_v"])
            attend_to_text = lambda h: cross_attention(h, text_bias, cached=text_kv)
        else:
            attend_to_text = lambda h: cross_attention(h, text_bias, source=text_states)
        x, (cross_k, cross_v) = _attention_block(config, self.dtype, x, attend_to_text, gain)
        x = _feed_forward_block(config, self.dtype, x, config.decoder_ffn_dim, gain)
        return x, {"self_k": self_k, "self_v": self_v, "cross_k": cross_k, "cross_v": cross_v}


def _embed(config, dtype, tokens, positions, vocab_size, max_positions):
    x = nn.Embed(vocab_size, config.d_model, dtype=dtype, name="embed_tokens")(tokens)
    if config.scale_embedding:
        x = x * math.sqrt(config.d_model)
    if config.use_absolute_position_embeddings:
        x = x + nn.Embed(max_positions, config.d_model, dtype=dtype, name="embed_positions")(positions)
    return _norm(config, dtype, name="layernorm_embedding")(x)


class Encoder(nn.Module):
    config: DalleBartConfig
    dtype: Any

    @nn.compact
    def __call__(self, input_ids, attention_mask):
        config = self.config
        positions = jnp.arange(input_ids.shape[1])[None]
        x = _embed(config, self.dtype, input_ids, positions, config.encoder_vocab_size,
                   config.max_text_length)
        bias = _padding_bias(attention_mask)
        for i in range(config.encoder_layers):
            x, _ = EncoderLayer(config, self.dtype, name=f"layers_{i}")(x, bias)
        if config.use_final_ln_encoder and config.ln_positions != "postln":
            x = _norm(config, self.dtype, config.force_ln_scale, name="final_ln")(x)
        return x


class Decoder(nn.Module):
    config: DalleBartConfig
    dtype: Any

    @nn.compact
    def __call__(self, tokens, index, cache, text_mask, text_states=None):
        """Tokens at positions index, index+1, ... attend to the image tokens up to their
        own position (earlier ones from the cache) and to the text."""
        config = self.config
        positions = index + jnp.arange(tokens.shape[1])
        x = _embed(config, self.dtype, tokens, positions[None], config.decoder_vocab_size,
                   config.image_length)
        cached_positions = jnp.arange(cache[0]["self_k"].shape[2])
        self_bias = jnp.where(cached_positions[None, :] <= positions[:, None], 0.0, -jnp.inf)[None, None]
        text_bias, new_cache = _padding_bias(text_mask), []
        for i, layer_cache in enumerate(cache):
            layer = DecoderLayer(config, self.dtype, name=f"layers_{i}")
            x, layer_cache = layer(x, layer_cache, index, self_bias, text_bias, text_states)
            new_cache.append(layer_cache)
        if config.use_final_ln_decoder and config.ln_positions != "postln":
            x = _norm(config, self.dtype, config.force_ln_scale, name="final_ln")(x)
        return x, tuple(new_cache)


class DalleBart(nn.Module):
    """Text ids → image-token logits. `encode` once, then `decode` token by token."""

    config: DalleBartConfig
    dtype: Any = jnp.float32

    def setup(self):
        self.encoder = Encoder(self.config, self.dtype)
        self.decoder = Decoder(self.config, self.dtype)
        self.lm_head = Dense(self.config.decoder_vocab_size, use_bias=False, dtype=self.dtype)

    def encode(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        return self.encoder(input_ids, attention_mask)

    def decode(self, tokens, index, cache: Cache, text_mask, text_states=None) -> tuple[jax.Array, Cache]:
        """Float32 logits for the tokens after `tokens`, and the updated cache.
        Pass `text_states` on the first call only."""
        x, cache = self.decoder(tokens, index, cache, text_mask, text_states)
        return self.lm_head(x).astype(jnp.float32), cache

    def __call__(self, input_ids, attention_mask, decoder_input_ids):
        """Teacher-forced logits for a whole sequence of image tokens."""
        text_states = self.encode(input_ids, attention_mask)
        cache = empty_cache(self.config, input_ids.shape[0], self.dtype)
        logits, _ = self.decode(decoder_input_ids, 0, cache, attention_mask, text_states)
        return logits


def empty_cache(config: DalleBartConfig, batch: int, dtype=jnp.float32) -> Cache:
    """Room for the keys/values of every image position, per layer: (batch, head, position, head_dim)."""
    heads = config.decoder_attention_heads
    shape = (batch, heads, config.image_length, config.d_model // heads)
    return tuple({"self_k": jnp.zeros(shape, dtype), "self_v": jnp.zeros(shape, dtype)}
                 for _ in range(config.decoder_layers))


def _example_inputs(config: DalleBartConfig):
    text = jnp.zeros((1, config.max_text_length), jnp.int32)
    return text, jnp.ones_like(text), jnp.zeros((1, config.image_length), jnp.int32)


def param_shapes(model: DalleBart) -> dict:
    """The parameter tree the model expects, as shapes (nothing is allocated)."""
    init = lambda: model.init(jax.random.PRNGKey(0), *_example_inputs(model.config))["params"]
    return jax.eval_shape(init)
