"""Ranking generated images by how well CLIP thinks they match their prompt.

Images go through CLIP in fixed-size, padded batches, so 1 image or 100 images, and
any number of batches, reuse one compiled function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from nbkit.limits import MAX_ASPECT_RATIO
from nbkit.models.clip import CLIP
from nbkit.models.config import read_json
from nbkit.text.tokenizer import CLIPTokenizer, check_prompts
from nbkit.weights.loaders import load_clip


@dataclass(frozen=True)
class RankedImage:
    index: int  # position in the images given to `rank`
    score: float  # CLIP's logit: scaled cosine similarity of image and prompt


def _padded_batches(array: np.ndarray, size: int):
    for start in range(0, len(array), size):
        chunk = array[start:start + size]
        padding = [(0, size - len(chunk))] + [(0, 0)] * (array.ndim - 1)
        yield np.pad(chunk, padding), len(chunk)


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
    def from_folder(cls, folder: str | Path) -> ImagePreprocessing:
        values = read_json(Path(folder) / "preprocessor_config.json", "it says how CLIP expects its images")
        size, crop = values.get("size", 224), values.get("crop_size", 224)
        size = size.get("shortest_edge", 224) if isinstance(size, dict) else size
        crop = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop, crop)
        return cls(size, crop[0], crop[1], values.get("resample", Image.BICUBIC),
                   values.get("rescale_factor", 1 / 255),
                   tuple(values.get("image_mean", cls.image_mean)),
                   tuple(values.get("image_std", cls.image_std)))

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
        if min(width, height) < 1 or max(width, height) > MAX_ASPECT_RATIO * min(width, height):
            raise ValueError(f"A {width}×{height} picture cannot be scored: CLIP scales its short side to "
                             f"{self.shortest_edge}, and pictures longer than {MAX_ASPECT_RATIO}:1 are "
                             "refused. Crop it first.")
        scale = self.shortest_edge / min(width, height)
        size = ((self.shortest_edge, int(scale * height)) if width <= height
                else (int(scale * width), self.shortest_edge))
        array = np.asarray(image.resize(size, resample=self.resample))
        top = (array.shape[0] - self.crop_height) // 2
        left = (array.shape[1] - self.crop_width) // 2
        array = array[top:top + self.crop_height, left:left + self.crop_width]
        array = array.astype(np.float32) * np.float32(self.rescale_factor)
        return (array - np.float32(self.image_mean)) / np.float32(self.image_std)


class Reranker:
    """Scores images against prompts with a CLIP model."""

    def __init__(self, model: CLIP, params: Any, tokenizer: CLIPTokenizer, preprocess: ImagePreprocessing,
                 batch_size: int = 16):
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}.")
        self.model, self.params = model, params
        self.tokenizer, self.preprocess = tokenizer, preprocess
        self.batch_size = batch_size

    @classmethod
    def from_folder(cls, folder: str | Path, dtype: Any = jnp.float32, batch_size: int = 16) -> Reranker:
        model, params = load_clip(folder, dtype)
        tokenizer = CLIPTokenizer.from_folder(folder, model.config.text.max_position_embeddings)
        return cls(model, params, tokenizer, ImagePreprocessing.from_folder(folder), batch_size)

    @cached_property
    def _embed_images(self):
        return jax.jit(lambda params, pixels: self.model.apply({"params": params}, pixels,
                                                               method=CLIP.embed_images))

    @cached_property
    def _embed_text(self):
        def embed(params, ids, mask):
            variables = {"params": params}
            return (self.model.apply(variables, method=CLIP.scale)
                    * self.model.apply(variables, ids, mask, method=CLIP.embed_text))
        return jax.jit(embed)

    def _embed_all(self, embed, array: np.ndarray, *more: np.ndarray) -> np.ndarray:
        out = []
        batches = zip(*(_padded_batches(a, self.batch_size) for a in (array, *more)), strict=True)
        for parts in batches:
            count = parts[0][1]
            out.append(np.asarray(embed(self.params, *(jnp.asarray(p) for p, _ in parts)))[:count])
        return np.concatenate(out)

    def scores(self, images: Sequence, prompts: Sequence[str]) -> np.ndarray:
        """CLIP score of each image against the prompt at the same position."""
        prompts = check_prompts(prompts)
        if len(images) != len(prompts):
            raise ValueError(f"Got {len(images)} images and {len(prompts)} prompts: "
                             f"give one prompt per image.")
        unique = sorted(set(prompts))
        ids, mask = self.tokenizer(unique)
        text = self._embed_all(self._embed_text, ids, mask)
        pixels = self.preprocess(images)
        image = self._embed_all(self._embed_images, pixels)
        which = np.array([unique.index(p) for p in prompts])
        return np.einsum("nd,nd->n", image, text[which])

    def rank(self, images: Sequence, prompts: Sequence[str]) -> dict[str, list[RankedImage]]:
        """For each prompt (in order of first appearance), its images best first."""
        scores = self.scores(images, prompts)
        ranked: dict[str, list[RankedImage]] = {}
        for index, (prompt, score) in enumerate(zip(prompts, scores, strict=True)):
            ranked.setdefault(prompt, []).append(RankedImage(index, float(score)))
        return {prompt: sorted(items, key=lambda item: -item.score) for prompt, items in ranked.items()}
