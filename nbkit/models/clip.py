"""CLIP in Flax: how well an image matches a text, to rank generated images.

Loads checkpoints as `transformers.FlaxCLIPModel.save_pretrained` writes them (e.g.
openai/clip-vit-base-patch32), with their tokenizer and image-processor settings.
Module names follow those checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nbkit.models.config import config_from_dict, read_json

_ACTIVATIONS = {"quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
                "gelu": partial(nn.gelu, approximate=False)}


@dataclass(frozen=True)
class TowerConfig:
    """One transformer tower (text or vision)."""

    hidden_size: int = 512
    intermediate_size: int = 2048
    num_attention_heads: int = 8
    num_hidden_layers: int = 12
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    max_position_embeddings: int = 77  # text
    vocab_size: int = 49408  # text
    image_size: int = 224  # vision
    patch_size: int = 32  # vision

    @classmethod
    def from_dict(cls, values: dict) -> TowerConfig:
        config = config_from_dict(cls, values)
        if config.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"config.json: hidden_act={config.hidden_act!r} is not supported "
                             f"(supported: {', '.join(_ACTIVATIONS)}).")
        return config


@dataclass(frozen=True)
class CLIPConfig:
    text: TowerConfig
    vision: TowerConfig
    projection_dim: int = 512

    @classmethod
    def from_folder(cls, folder: str | Path) -> CLIPConfig:
        values = read_json(Path(folder) / "config.json", "a CLIP model folder needs its config.json")
        return cls(TowerConfig.from_dict(values.get("text_config", {})),
                   TowerConfig.from_dict(values.get("vision_config", {})),
                   values.get("projection_dim", 512))


# openai/clip-vit-base-patch32 and clip-vit-large-patch14, as their config.json say.
PUBLISHED_ARCHITECTURES = {
    "clip-b32": CLIPConfig(
        TowerConfig(512, 2048, 8, 12),
        TowerConfig(768, 3072, 12, 12, patch_size=32), 512),
    "clip-l14": CLIPConfig(
        TowerConfig(768, 3072, 12, 12),
        TowerConfig(1024, 4096, 16, 24, patch_size=14), 768),
}


class SelfAttention(nn.Module):
    heads: int
    dtype: Any

    @nn.compact
    def __call__(self, x, bias):
        width = x.shape[-1]
        dense = partial(nn.Dense, width, dtype=self.dtype)
        split = lambda t: t.reshape(t.shape[:2] + (self.heads, width // self.heads)).transpose(0, 2, 1, 3)
        query, key, value = (split(dense(name=f"{n}_proj")(x)) for n in ("q", "k", "v"))
        scores = jnp.einsum("bhqd,bhkd->bhqk", query / jnp.sqrt(query.shape[-1]).astype(self.dtype), key)
        weights = jax.nn.softmax(scores.astype(jnp.float32) + bias, axis=-1).astype(self.dtype)
        output = jnp.einsum("bhqk,bhkd->bhqd", weights, value).transpose(0, 2, 1, 3).reshape(x.shape)
        return dense(name="out_proj")(output)


class EncoderLayer(nn.Module):
    config: TowerConfig
    dtype: Any

    @nn.compact
    def __call__(self, x, bias):
        config = self.config
        norm = partial(nn.LayerNorm, epsilon=config.layer_norm_eps, dtype=self.dtype)
        attention = SelfAttention(config.num_attention_heads, self.dtype, name="self_attn")
        x = x + attention(norm(name="layer_norm1")(x), bias)
        x = x + MLP(config, self.dtype, name="mlp")(norm(name="layer_norm2")(x))
        return x


class MLP(nn.Module):
    config: TowerConfig
    dtype: Any

    @nn.compact
    def __call__(self, x):
        activation = _ACTIVATIONS[self.config.hidden_act]
        h = activation(nn.Dense(self.config.intermediate_size, dtype=self.dtype, name="fc1")(x))
        return nn.Dense(self.config.hidden_size, dtype=self.dtype, name="fc2")(h)


class Encoder(nn.Module):
    config: TowerConfig
    dtype: Any

    @nn.compact
    def __call__(self, x, bias):
        for i in range(self.config.num_hidden_layers):
            x = EncoderLayer(self.config, self.dtype, name=f"layers_{i}")(x, bias)
        return x


class TextEmbeddings(nn.Module):
    config: TowerConfig
    dtype: Any

    @nn.compact
    def __call__(self, input_ids):
        embed = partial(nn.Embed, features=self.config.hidden_size, dtype=self.dtype)
        x = embed(self.config.vocab_size, name="token_embedding")(input_ids)
        positions = jnp.arange(input_ids.shape[1])[None]
        return x + embed(self.config.max_position_embeddings, name="position_embedding")(positions)


class TextTower(nn.Module):
    """Token ids → one vector per text, read at its end-of-text token."""

    config: TowerConfig
    dtype: Any

    @nn.compact
    def __call__(self, input_ids, attention_mask):
        config, length = self.config, input_ids.shape[1]
        x = TextEmbeddings(config, self.dtype, name="embeddings")(input_ids)
        causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
        visible = causal & (attention_mask[:, None, None, :] > 0)
        x = Encoder(config, self.dtype, name="encoder")(x, jnp.where(visible, 0.0, -jnp.inf))
        x = nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=self.dtype, name="final_layer_norm")(x)
        # The end-of-text token has the largest id of the vocabulary.
        return x[jnp.arange(x.shape[0]), jnp.argmax(input_ids, axis=-1)]


class VisionEmbeddings(nn.Module):
    config: TowerConfig
    dtype: Any

    @nn.compact
    def __call__(self, pixels):
        config = self.config
        patch = (config.patch_size, config.patch_size)
        patches = nn.Conv(config.hidden_size, kernel_size=patch, strides=patch, padding="VALID",
                          use_bias=False, dtype=self.dtype, name="patch_embedding")(pixels)
        patches = patches.reshape(patches.shape[0], -1, config.hidden_size)
        class_token = self.param("class_embedding", nn.initializers.normal(0.02), (config.hidden_size,))
        class_tokens = jnp.broadcast_to(class_token.astype(self.dtype),
                                        (patches.shape[0], 1, config.hidden_size))
        x = jnp.concatenate([class_tokens, patches], axis=1)
        positions = nn.Embed(x.shape[1], config.hidden_size, dtype=self.dtype, name="position_embedding")
        return x + positions(jnp.arange(x.shape[1])[None])


class VisionTower(nn.Module):
    """(batch, H, W, 3) normalized pixels → one vector per image, read at the class token."""

    config: TowerConfig
    dtype: Any

    @nn.compact
    def __call__(self, pixels):
        config = self.config
        norm = partial(nn.LayerNorm, epsilon=config.layer_norm_eps, dtype=self.dtype)
        x = VisionEmbeddings(config, self.dtype, name="embeddings")(pixels)
        x = norm(name="pre_layrnorm")(x)  # sic: the checkpoints' spelling
        x = Encoder(config, self.dtype, name="encoder")(x, jnp.zeros((1, 1, 1, 1), jnp.float32))
        return norm(name="post_layernorm")(x[:, 0])


class CLIP(nn.Module):
    config: CLIPConfig
    dtype: Any = jnp.float32

    def setup(self):
        config = self.config
        self.text_model = TextTower(config.text, self.dtype)
        self.vision_model = VisionTower(config.vision, self.dtype)
        self.text_projection = nn.Dense(config.projection_dim, use_bias=False, dtype=self.dtype)
        self.visual_projection = nn.Dense(config.projection_dim, use_bias=False, dtype=self.dtype)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(2.6592), ())

    def embed_text(self, input_ids, attention_mask):
        """Unit-length text embeddings (batch, projection_dim), float32."""
        return _unit(self.text_projection(self.text_model(input_ids, attention_mask)))

    def embed_images(self, pixels):
        """Unit-length image embeddings (batch, projection_dim), float32."""
        return _unit(self.visual_projection(self.vision_model(pixels)))

    def scale(self):
        return jnp.exp(self.logit_scale.astype(jnp.float32))

    def __call__(self, input_ids, attention_mask, pixels):
        """logits_per_image (images, texts): scaled cosine similarities."""
        return self.scale() * self.embed_images(pixels) @ self.embed_text(input_ids, attention_mask).T


def _unit(x):
    x = x.astype(jnp.float32)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


# ---- loading -------------------------------------------------------------------------


def param_shapes(model: CLIP) -> dict:
    vision = model.config.vision
    ids = jnp.zeros((1, model.config.text.max_position_embeddings), jnp.int32)
    pixels = jnp.zeros((1, vision.image_size, vision.image_size, 3), jnp.float32)
    return jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), ids, jnp.ones_like(ids), pixels)["params"])


# ---- inputs --------------------------------------------------------------------------
