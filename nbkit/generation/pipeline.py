"""Prompts → images, on whatever devices are here: the one object notebooks and the CLI use.

Each image's random key comes from (seed, prompt index, image index) alone, and every row of
a batch is sampled independently, so the same seed gives the same image on 1 GPU, 8 TPU cores
or a CPU. Batches are padded to a few bucket sizes (multiples of the data-parallel device
count), and sampling settings are traced values: new prompts, seeds or settings reuse the
compiled programs.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from nbkit.generation import sharding
from nbkit.generation.device import detect, use_compilation_cache
from nbkit.generation.sampling import SamplingSettings, compiled_sampler
from nbkit.models import vqgan as vqgan_module
from nbkit.models.dallebart import DalleBart
from nbkit.text.tokenizer import PromptTokenizer, check_prompts
from nbkit.weights import hub
from nbkit.weights.loaders import load_dallebart


@dataclasses.dataclass(frozen=True)
class GeneratedImage:
    prompt: str
    prompt_index: int
    image_index: int
    seed: int
    tokens: np.ndarray          # (256,) image codes
    pixels: np.ndarray          # (256, 256, 3) uint8


@dataclasses.dataclass
class Generation:
    images: list[GeneratedImage]
    prompts: list[str]
    seed: int
    settings: SamplingSettings
    model: str
    timings: dict[str, float]   # seconds: tokens, pixels, total
    stopped: bool = False       # True when `should_stop` ended the run early: `images` holds the finished ones

    def for_prompt(self, prompt_index: int) -> list[GeneratedImage]:
        return [image for image in self.images if image.prompt_index == prompt_index]


class Progress:
    """What `on_progress` receives. `images` (this batch's images decoded from the tokens drawn
    so far) are decoded when first read, so a callback that only moves a progress bar costs
    nothing; at the end of a batch (`final`) they are the finished images."""

    def __init__(self, tokens_done: int, tokens_total: int, final: bool, decode: Callable[[], list]):
        self.tokens_done, self.tokens_total, self.final = tokens_done, tokens_total, final
        self._decode, self._images = decode, None

    @property
    def images(self) -> list[GeneratedImage]:
        if self._images is None:
            self._images = self._decode()
        return self._images


@jax.jit
def _image_key(seed, prompt_index, image_index):
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), prompt_index), image_index)


def image_keys(seed: int, prompt_indexes: np.ndarray, image_indexes: np.ndarray) -> np.ndarray:
    """One raw PRNG key per image, from (seed, prompt index, image index) only (one compiled
    program for any number of images)."""
    return np.stack([np.asarray(_image_key(np.uint32(seed), np.uint32(p), np.uint32(i)))
                     for p, i in zip(prompt_indexes, image_indexes)])


def draw_seed() -> int:
    """A random seed, the same on every host of a multi-host run."""
    seed = secrets.randbelow(2**31)
    if jax.process_count() > 1:
        seed = int(multihost_utils.broadcast_one_to_all(np.int32(seed)))
    return seed


def bucket_sizes(data_parallel: int, max_batch: int) -> list[int]:
    """Batch sizes that get compiled: data_parallel × 1, 2, 4, … up to max_batch."""
    sizes, size = [], data_parallel
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return sizes + [max(max_batch, data_parallel)]


class Pipeline:
    def __init__(self, model: DalleBart, params: Any, tokenizer: PromptTokenizer,
                 vqgan: vqgan_module.VQGANDecoder, vqgan_params: Any, mesh: jax.sharding.Mesh,
                 max_batch: int | None = None, name: str = "model"):
        self.model, self.params, self.tokenizer = model, params, tokenizer
        self.vqgan, self.vqgan_params, self.mesh, self.name = vqgan, vqgan_params, mesh, name
        data = sharding.data_size(mesh)
        per_device = 8 if mesh.devices.flat[0].platform != "cpu" else 4
        self.max_batch = max_batch or data * per_device
        if self.max_batch % data:
            raise ValueError(f"max_batch={self.max_batch} must be a multiple of the {data} data-parallel devices.")
        self.buckets = bucket_sizes(data, self.max_batch)
        self._sample = compiled_sampler(model, vqgan.config.n_embed)
        self._decode = vqgan_module.compiled_decoder(vqgan)

    @classmethod
    def from_pretrained(cls, model: str | Path = "mini", vqgan: str | Path = "vqgan", dtype: Any = None,
                        model_parallel: int = 1, max_batch: int | None = None, cache: str | Path | None = None,
                        progress: bool = True, devices: list | None = None,
                        compilation_cache: str | Path | None = None) -> "Pipeline":
        """Named models (see `nbkit.registry`), hub ids, W&B artifacts or local folders.

        `dtype`: default the device's recommended one. `model_parallel`: split each weight
        matrix over that many devices (for Mega on cores that cannot hold it, e.g. TPU v2).
        `compilation_cache`: a folder (e.g. on Drive) where compiled programs are kept, so
        that the next session does not compile again.
        """
        if compilation_cache is not None:
            use_compilation_cache(compilation_cache)
        dtype = jnp.dtype(dtype or detect().recommended_dtype)
        mesh = sharding.make_mesh(model_parallel, devices)
        folder = hub.fetch(model, cache, progress)
        vqgan_folder = hub.fetch(vqgan, cache, progress)
        dallebart, params = load_dallebart(folder, dtype, place=sharding.weight_placer(mesh))
        decoder, decoder_params = vqgan_module.load_vqgan(vqgan_folder, dtype)
        return cls(dallebart, params, PromptTokenizer.from_folder(folder), decoder,
                   sharding.put_tree(decoder_params, mesh), mesh, max_batch, name=str(model))

    def generate(self, prompts: Sequence[str], n_images: int = 1, seed: int | None = None,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 condition_scale: float = 10.0, on_progress: Callable[[Progress], None] | None = None,
                 progress_every: int = 32, should_stop: Callable[[], bool] | None = None,
                 on_batch: Callable[[list[GeneratedImage]], None] | None = None,
                 only: Collection[tuple[int, int]] | None = None) -> Generation:
        """`n_images` images for each prompt. `seed` None draws one (it is in the result).

        `on_progress` is called every `progress_every` tokens with the images so far;
        `should_stop` is asked as often and, when it says True, the call returns the
        images already finished. `on_batch` receives each batch's finished images (to save
        them as they come). `only`: make just these (prompt index, image index) images —
        the others of a resumed run, or one image to reproduce.
        """
        prompts = check_prompts(prompts)
        if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
            raise ValueError(f"n_images must be a whole number ≥ 1 (got {n_images!r}).")
        if seed is None:
            seed = draw_seed()
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
            raise ValueError(f"seed must be a whole number in [0, 2³²) or None for a random one (got {seed!r}).")
        if not (isinstance(progress_every, int) and progress_every >= 1):
            raise ValueError(f"progress_every must be a whole number ≥ 1 (got {progress_every!r}).")
        settings = SamplingSettings(temperature, top_k, top_p, condition_scale)
        traced = jax.tree.map(lambda value: sharding.put(value, sharding.replicated(self.mesh)),
                              settings.as_arrays(self.model.config))
        tokenized = self.tokenizer(prompts)
        prompt_of = np.repeat(np.arange(len(prompts)), n_images)
        image_of = np.tile(np.arange(n_images), len(prompts))
        if only is not None:
            wanted = {(int(p), int(i)) for p, i in only}
            chosen_rows = [row for row in range(len(prompt_of)) if (prompt_of[row], image_of[row]) in wanted]
            prompt_of, image_of = prompt_of[chosen_rows], image_of[chosen_rows]
        keys = image_keys(seed, prompt_of, image_of) if len(prompt_of) else np.zeros((0, 2), np.uint32)

        started, timings = time.perf_counter(), {"tokens": 0.0, "pixels": 0.0}
        images: list[GeneratedImage] = []
        length = self.model.config.image_length
        total, stopped = len(prompt_of) * length, False
        for first in range(0, len(prompt_of), self.max_batch):
            chosen = np.arange(first, min(len(prompt_of), first + self.max_batch))
            size = next(b for b in self.buckets if b >= len(chosen))
            padded = np.concatenate([chosen, np.full(size - len(chosen), chosen[0])])

            def decode(tokens: jax.Array) -> list[GeneratedImage]:
                return self._timed_images(tokens, padded[:len(chosen)], prompts, prompt_of, image_of, seed, timings)

            def report(tokens: jax.Array, done: int) -> None:
                on_progress(Progress(first * length + done * len(chosen), total, False, lambda: decode(tokens)))

            tokens, stopped = self._tokens(tokenized, prompt_of[padded], keys[padded], traced,
                                           report if on_progress else None, progress_every, should_stop, timings)
            if stopped:
                break
            batch = decode(tokens)
            if on_progress is not None:
                on_progress(Progress((first + len(chosen)) * length, total, True, lambda: batch))
            images += batch
            if on_batch is not None:
                on_batch(batch)
        timings["total"] = time.perf_counter() - started
        return Generation(images, prompts, seed, settings, self.name, timings, stopped)

    def _tokens(self, tokenized, prompt_rows, keys, traced, report, every, should_stop, timings):
        """Samples one padded batch; in steps of `every` tokens when someone watches or may stop it."""
        began = time.perf_counter()
        put = lambda value: sharding.put(value, sharding.rows(self.mesh))
        ids, mask = put(tokenized.input_ids[prompt_rows]), put(tokenized.attention_mask[prompt_rows])
        ids_uncond = put(tokenized.input_ids_uncond[prompt_rows])
        mask_uncond = put(tokenized.attention_mask_uncond[prompt_rows])
        state = self._sample.start(self.params, ids, mask, ids_uncond, mask_uncond, put(keys), traced)
        text_mask = jnp.concatenate([mask, mask_uncond])
        length = self.model.config.image_length
        if report is None and should_stop is None:
            every = length                   # nobody watches: the whole loop in one compiled call
        for begin in range(1, length, every):
            end = min(begin + every, length)
            state = self._sample.advance(self.params, state, text_mask, traced, begin, end)
            if should_stop is not None and should_stop():
                timings["tokens"] += time.perf_counter() - began
                return state[0], True
            if report is not None and end < length:
                timings["tokens"] += time.perf_counter() - began
                report(jnp.copy(state[0]), end)   # a copy: the next step donates the state
                began = time.perf_counter()
        state[0].block_until_ready()
        timings["tokens"] += time.perf_counter() - began
        return state[0], False

    def _timed_images(self, tokens, rows, prompts, prompt_of, image_of, seed, timings):
        began = time.perf_counter()
        images = self._images(tokens, rows, prompts, prompt_of, image_of, seed)
        timings["pixels"] += time.perf_counter() - began
        return images

    def _images(self, tokens, rows, prompts, prompt_of, image_of, seed) -> list[GeneratedImage]:
        pixels = vqgan_module.to_uint8(sharding.to_host(self._decode(self.vqgan_params, tokens)))
        codes = sharding.to_host(tokens)
        return [GeneratedImage(prompts[prompt_of[row]], int(prompt_of[row]), int(image_of[row]), seed,
                               codes[slot], pixels[slot]) for slot, row in enumerate(rows)]
