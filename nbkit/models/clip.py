"""CLIP in Flax: how well an image matches a text, to rank generated images.

Loads checkpoints as `transformers.FlaxCLIPModel.save_pretrained` writes them (e.g.
openai/clip-vit-base-patch32), with their tokenizer and image-processor settings.
Module names follow those checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from tokenizers import Tokenizer

from nbkit.checkpoint import config_from_dict, load_params, random_weights, read_json
from nbkit.tokenizer import FixedLengthEncoder, check_prompts

WEIGHTS_FILE = "flax_model.msgpack"
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
    def from_dict(cls, values: dict) -> "TowerConfig":
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
    def from_folder(cls, folder: str | Path) -> "CLIPConfig":
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
        x = x + SelfAttention(config.num_attention_heads, self.dtype, name="self_attn")(norm(name="layer_norm1")(x), bias)
        x = x + MLP(config, self.dtype, name="mlp")(norm(name="layer_norm2")(x))
        return x


class MLP(nn.Module):
    config: TowerConfig
    dtype: Any

    @nn.compact
    def __call__(self, x):
        h = _ACTIVATIONS[self.config.hidden_act](nn.Dense(self.config.intermediate_size, dtype=self.dtype, name="fc1")(x))
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
        patches = nn.Conv(config.hidden_size, kernel_size=patch, strides=patch, padding="VALID", use_bias=False,
                          dtype=self.dtype, name="patch_embedding")(pixels)
        patches = patches.reshape(patches.shape[0], -1, config.hidden_size)
        class_token = self.param("class_embedding", nn.initializers.normal(0.02), (config.hidden_size,))
        class_tokens = jnp.broadcast_to(class_token.astype(self.dtype), (patches.shape[0], 1, config.hidden_size))
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


def _from_checkpoint(key: tuple[str, ...], value):
    # transformers nests layers as encoder/layers/<i>; we name them layers_<i>.
    if "layers" in key:
        at = key.index("layers")
        if at + 1 < len(key) and key[at + 1].isdigit():
            key = key[:at] + (f"layers_{key[at + 1]}",) + key[at + 2:]
    return key, value


def param_shapes(model: CLIP) -> dict:
    vision = model.config.vision
    ids = jnp.zeros((1, model.config.text.max_position_embeddings), jnp.int32)
    pixels = jnp.zeros((1, vision.image_size, vision.image_size, 3), jnp.float32)
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, jnp.ones_like(ids), pixels)["params"])


def random_params(model: CLIP, seed: int = 0) -> dict:
    """Random weights of the real sizes, for benchmarks."""
    return random_weights(param_shapes(model), model.dtype, seed)


def load_clip(folder: str | Path, dtype: Any = jnp.float32) -> tuple[CLIP, dict]:
    model = CLIP(CLIPConfig.from_folder(folder), dtype)
    return model, load_params(Path(folder) / WEIGHTS_FILE, param_shapes(model), dtype, _from_checkpoint)


# ---- inputs --------------------------------------------------------------------------


class CLIPTokenizer:
    """Texts → (ids, mask) padded to the model's text length, from the folder's tokenizer.json."""

    def __init__(self, encoder: FixedLengthEncoder):
        self._encode = encoder

    @classmethod
    def from_folder(cls, folder: str | Path, length: int = 77) -> "CLIPTokenizer":
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the CLIP tokenizer needs it. Download the model folder again.")
        pad = "<|endoftext|>"
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            if (folder / name).is_file():
                value = read_json(folder / name, "it names the padding token").get("pad_token", pad)
                pad = value["content"] if isinstance(value, dict) else value
                break
        return cls(FixedLengthEncoder(Tokenizer.from_file(str(path)), pad, length))

    def __call__(self, texts) -> tuple[np.ndarray, np.ndarray]:
        return self._encode(check_prompts(texts))


@dataclass(frozen=True)
class ImagePreprocessing:
    """`preprocessor_config.json`: resize the shortest edge, center crop, rescale, normalize."""

    shortest_edge: int = 224
    crop_height: int = 224
    crop_width: int = 224
    resample: int = Image.BICUBIC
    rescale_factor: float = 1 / 255
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    @classmethod
    def from_folder(cls, folder: str | Path) -> "ImagePreprocessing":
        values = read_json(Path(folder) / "preprocessor_config.json", "it says how CLIP expects its images")
        size, crop = values.get("size", 224), values.get("crop_size", 224)
        size = size.get("shortest_edge", 224) if isinstance(size, dict) else size
        crop = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop, crop)
        return cls(size, crop[0], crop[1], values.get("resample", Image.BICUBIC),
                   values.get("rescale_factor", 1 / 255),
                   tuple(values.get("image_mean", cls.image_mean)), tuple(values.get("image_std", cls.image_std)))

    def __call__(self, images) -> np.ndarray:
        """Images (PIL, or uint8 / [0, 1] float arrays) → (batch, crop_h, crop_w, 3) float32."""
        return np.stack([self._one(image) for image in images])

    def _one(self, image) -> np.ndarray:
        if not isinstance(image, Image.Image):
            array = np.asarray(image)
            if array.dtype != np.uint8:
                array = (np.clip(array, 0, 1) * 255).astype(np.uint8)
            image = Image.fromarray(array)
        image = image.convert("RGB")
        width, height = image.size
        scale = self.shortest_edge / min(width, height)
        size = (self.shortest_edge, int(scale * height)) if width <= height else (int(scale * width), self.shortest_edge)
        array = np.asarray(image.resize(size, resample=self.resample))
        top = (array.shape[0] - self.crop_height) // 2
        left = (array.shape[1] - self.crop_width) // 2
        array = array[top:top + self.crop_height, left:left + self.crop_width]
        array = array.astype(np.float32) * np.float32(self.rescale_factor)
        return (array - np.float32(self.image_mean)) / np.float32(self.image_std)
