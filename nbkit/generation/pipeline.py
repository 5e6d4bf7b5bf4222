"""Prompts → images, on whatever devices are here: the one object notebooks, the CLI and `runs` use.

`Pipeline.stream(request)` is the one way to generate: a generator of events, in the manner of
min-dalle's `generate_image_stream` and gemma's sampler state. It yields `Progress` while a batch
forms (tokens so far, and its images decoded only if asked for), a `Batch` of finished images as
each batch ends, and `Done` with the timings. Stopping is leaving the loop; saving is the
consumer's job (`nbkit.output.runs` saves each batch as it comes). `generate()` collects a stream.

Each image's random key comes from (seed, prompt index, image index) alone, and every row of a
batch is sampled independently, so the same seed gives the same image tokens on 1 GPU, 8 TPU cores
or a CPU. Batches are padded to a few bucket sizes (multiples of the data-parallel device count),
and sampling settings are traced values: new prompts, seeds or settings reuse the compiled programs.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Collection, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from nbkit.generation import sharding
from nbkit.generation.device import detect, use_compilation_cache
from nbkit.generation.sampling import CompiledSampler, SamplingSettings, compiled_sampler, kept_prefix
from nbkit.models import vqgan as vqgan_module
from nbkit.models.dallebart import DalleBart
from nbkit.text.tokenizer import PromptTokenizer, check_prompts
from nbkit.weights import hub
from nbkit.weights.loaders import load_dallebart, load_vqgan

SEED_LIMIT = 2**32


def draw_seed() -> int:
    """A random seed, the same on every host of a multi-host run."""
    seed = secrets.randbelow(2**31)
    if jax.process_count() > 1:
        seed = int(multihost_utils.broadcast_one_to_all(np.int32(seed)))
    return seed


def _whole(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    """What to make, checked once where it enters. A seed left as None is drawn here, once, so
    the request (and everything made from it) always knows its seed.

    `only`: make just these (prompt index, image index) images — the rest of a resumed run, or
    one image to reproduce; their keys are those they have in the whole request.
    `negative_prompt`: what the images should not show — one text for every prompt, or one per
    prompt; it takes the empty prompt's place in super-conditioning (logits = negative + scale ·
    (prompt − negative)). Empty means none: exactly the images made without one.
    """

    prompts: Sequence[str]
    n_images: int = 1
    seed: int | None = None
    settings: SamplingSettings = SamplingSettings()
    only: Collection[tuple[int, int]] | None = None
    negative_prompt: str | Sequence[str] = ""

    def __post_init__(self):
        object.__setattr__(self, "prompts", tuple(check_prompts(self.prompts)))
        negative = self.negative_prompt
        negative = [negative] * len(self.prompts) if isinstance(negative, str) else list(negative)
        if len(negative) != len(self.prompts) or not all(isinstance(text, str) for text in negative):
            raise ValueError("negative_prompt must be one text, or one text per prompt "
                             f"({len(self.prompts)}); "
                             f"got {self.negative_prompt!r}.")
        object.__setattr__(self, "negative_prompt", tuple(negative))
        if not _whole(self.n_images) or self.n_images < 1:
            raise ValueError(f"n_images must be a whole number ≥ 1 (got {self.n_images!r}).")
        if self.seed is None:
            object.__setattr__(self, "seed", draw_seed())
        elif not _whole(self.seed) or not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"seed must be a whole number in [0, 2³²) or None for a random one "
                             f"(got {self.seed!r}).")
        if not isinstance(self.settings, SamplingSettings):
            raise TypeError(f"settings must be a SamplingSettings (got {type(self.settings).__name__}).")
        object.__setattr__(self, "n_images", int(self.n_images))
        object.__setattr__(self, "seed", int(self.seed))
        if self.only is not None:
            only = frozenset((int(p), int(i)) for p, i in self.only)
            outside = [(p, i) for p, i in only if not (0 <= p < len(self.prompts) and 0 <= i < self.n_images)]
            if outside:
                raise ValueError(f"only= names images the request does not have: {sorted(outside)[:5]} "
                                 f"({len(self.prompts)} prompt(s) × {self.n_images} image(s)).")
            object.__setattr__(self, "only", only)

    @property
    def images(self) -> list[tuple[int, int]]:
        """(prompt index, image index) of each image to make, in order."""
        every = [(p, i) for p in range(len(self.prompts)) for i in range(self.n_images)]
        return every if self.only is None else [pair for pair in every if pair in self.only]


@dataclasses.dataclass(frozen=True)
class GeneratedImage:
    prompt: str
    prompt_index: int
    image_index: int
    seed: int
    tokens: np.ndarray          # (256,) image codes: the image's identity
    pixels: np.ndarray          # (256, 256, 3) uint8


# ---- the events of a stream


@dataclasses.dataclass(frozen=True)
class Progress:
    """A batch is forming. `images` decodes its rows' tokens so far (zeros after `position`) when
    first read, so a consumer that only moves a progress bar pays for no decoding."""

    tokens_done: int            # image tokens drawn so far in this run, over all its images
    tokens_total: int
    images_done: int            # images finished (earlier batches)
    images_total: int
    elapsed: float              # seconds since the stream started
    compiling: bool             # this batch runs a program for the first time (it compiles first)
    position: int               # tokens drawn so far in each row of this batch
    tokens: jax.Array | None = dataclasses.field(default=None, repr=False)   # (batch, 256), own copy
    _decode: Any = dataclasses.field(default=None, repr=False, compare=False)

    @cached_property
    def images(self) -> list[GeneratedImage]:
        return [] if self.tokens is None else self._decode(self.tokens)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Finished images, as soon as their batch ends."""

    images: list[GeneratedImage]
    images_done: int
    images_total: int
    elapsed: float


@dataclasses.dataclass(frozen=True)
class Done:
    """The stream's last event."""

    images_total: int
    timings: dict[str, float]   # seconds: tokens, pixels, total


Event = Progress | Batch | Done


@dataclasses.dataclass
class Generation:
    """A collected stream: every image of a request, in order."""

    images: list[GeneratedImage]
    request: GenerationRequest
    model: str
    timings: dict[str, float]

    @property
    def seed(self) -> int:
        return self.request.seed

    @property
    def prompts(self) -> tuple[str, ...]:
        return self.request.prompts

    @property
    def settings(self) -> SamplingSettings:
        return self.request.settings

    def for_prompt(self, prompt_index: int) -> list[GeneratedImage]:
        return [image for image in self.images if image.prompt_index == prompt_index]


# ---- keys and batches


@jax.jit
def _image_key(seed, prompt_index, image_index):
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), prompt_index), image_index)


def image_keys(seed: int, prompt_indexes: np.ndarray, image_indexes: np.ndarray) -> np.ndarray:
    """One raw PRNG key per image, from (seed, prompt index, image index) only (one compiled
    program for any number of images)."""
    return np.stack([np.asarray(_image_key(np.uint32(seed), np.uint32(p), np.uint32(i)))
                     for p, i in zip(prompt_indexes, image_indexes, strict=True)])


def bucket_sizes(data_parallel: int, max_batch: int) -> list[int]:
    """Batch sizes that get compiled: data_parallel × 1, 2, 4, … up to max_batch."""
    sizes, size = [], data_parallel
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return [*sizes, max(max_batch, data_parallel)]


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
            raise ValueError(f"max_batch={self.max_batch} must be a multiple of the {data} data-parallel "
                             "devices.")
        self.buckets = bucket_sizes(data, self.max_batch)
        self._decode = vqgan_module.compiled_decoder(vqgan)
        self._warm: set[tuple[int, bool]] = set()     # (bucket, super-conditioned) programs already run

    @classmethod
    def from_pretrained(cls, model: str | Path = "mini", vqgan: str | Path = "vqgan", dtype: Any = None,
                        model_parallel: int = 1, max_batch: int | None = None,
                        cache: str | Path | None = None,
                        progress: bool = True, devices: list | None = None,
                        compilation_cache: str | Path | None = None) -> Pipeline:
        """Named models (see `nbkit.weights.registry`), hub ids, W&B artifacts or local folders.

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
        decoder, decoder_params = load_vqgan(vqgan_folder, dtype)
        return cls(dallebart, params, PromptTokenizer.from_folder(folder), decoder,
                   sharding.put_tree(decoder_params, mesh), mesh, max_batch, name=str(model))

    def sampler(self, settings: SamplingSettings) -> CompiledSampler:
        return compiled_sampler(self.model, self.vqgan.config.n_embed, settings.super_conditioned, self.mesh)

    def generate(self, prompts: Sequence[str], n_images: int = 1, seed: int | None = None,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 condition_scale: float = 10.0, only: Collection[tuple[int, int]] | None = None,
                 negative_prompt: str | Sequence[str] = "") -> Generation:
        """`n_images` images for each prompt, all at once. `seed` None draws one (see `.seed`)."""
        request = GenerationRequest(prompts, n_images, seed,
                                    SamplingSettings(temperature, top_k, top_p, condition_scale), only,
                                    negative_prompt)
        return self.collect(request)

    def collect(self, request: GenerationRequest) -> Generation:
        images, timings = [], {}
        for event in self.stream(request):
            if isinstance(event, Batch):
                images += event.images
            elif isinstance(event, Done):
                timings = event.timings
        return Generation(images, request, self.name, timings)

    def stream(self, request: GenerationRequest, progress_every: int | None = None) -> Iterator[Event]:
        """Generates `request`, yielding `Progress` every `progress_every` tokens (and at the start of
        each batch), a `Batch` of finished images as each batch ends, and `Done` last.

        `progress_every=None` samples each batch in one compiled call (the fastest): only the
        start-of-batch `Progress` is yielded then. Leave the loop to stop; finished batches stay
        with the consumer.
        """
        if progress_every is not None and not (_whole(progress_every) and progress_every >= 1):
            raise ValueError(f"progress_every must be a whole number ≥ 1 or None (got {progress_every!r}).")
        if not isinstance(request, GenerationRequest):
            raise TypeError(f"stream takes a GenerationRequest (got {type(request).__name__}); "
                            "for prompts, use generate().")
        return self._stream(request, progress_every)

    def _stream(self, request: GenerationRequest, progress_every: int | None) -> Iterator[Event]:
        started = time.perf_counter()
        timings = {"tokens": 0.0, "pixels": 0.0}
        wanted = request.images
        prompt_of = np.array([p for p, _ in wanted], np.int64)
        image_of = np.array([i for _, i in wanted], np.int64)
        keys = image_keys(request.seed, prompt_of, image_of) if wanted else np.zeros((0, 2), np.uint32)
        tokenized = self.tokenizer(list(request.prompts), list(request.negative_prompt))
        sampler = self.sampler(request.settings)
        traced = jax.tree.map(lambda value: sharding.put(value, sharding.replicated(self.mesh)),
                              request.settings.as_arrays(self.model.config))
        length = self.model.config.image_length
        total, done = len(wanted), 0
        every = progress_every or length
        for first in range(0, total, self.max_batch):
            chosen = np.arange(first, min(total, first + self.max_batch))
            size = next(b for b in self.buckets if b >= len(chosen))
            padded = np.concatenate([chosen, np.full(size - len(chosen), chosen[0])])
            rows = [(request.prompts[prompt_of[row]], int(prompt_of[row]), int(image_of[row]))
                    for row in chosen]
            program = (size, sampler.super_conditioned)
            compiling = program not in self._warm

            def decode(tokens: jax.Array, rows=rows) -> list[GeneratedImage]:
                began = time.perf_counter()
                images = self._images(tokens, rows, request.seed)
                timings["pixels"] += time.perf_counter() - began
                return images

            rows_now = len(chosen)

            def progress(position: int, tokens: jax.Array | None = None, compiling=compiling, done=done,
                         rows_now=rows_now, decode=decode) -> Progress:
                return Progress(done * length + position * rows_now, total * length, done, total,
                                time.perf_counter() - started, compiling, position, tokens, decode)

            yield progress(0)
            began = time.perf_counter()
            state = self._start(sampler, tokenized, prompt_of[padded], keys[padded], traced)
            for begin in range(1, length, every):
                end = min(begin + every, length)
                state = sampler.advance(self.params, state, traced, begin, end)
                if end < length:
                    snapshot = jnp.copy(state.tokens)      # a copy: the next advance donates the state
                    snapshot.block_until_ready()
                    timings["tokens"] += time.perf_counter() - began
                    self._warm.add(program)
                    yield progress(end, snapshot, compiling=False)
                    began = time.perf_counter()
            state.tokens.block_until_ready()
            timings["tokens"] += time.perf_counter() - began
            self._warm.add(program)
            images = decode(state.tokens)
            done += len(chosen)
            yield Batch(images, done, total, time.perf_counter() - started)
        timings["total"] = time.perf_counter() - started
        yield Done(total, timings)

    def _start(self, sampler: CompiledSampler, tokenized, prompt_rows: np.ndarray, keys: np.ndarray, traced,
               known: np.ndarray | None = None, kept: np.ndarray | None = None):
        """The sampler's state for one padded batch: prompts encoded, first token drawn, kept prefix run."""
        put = lambda value: sharding.put(value, sharding.rows(self.mesh))
        shape = (len(prompt_rows), self.model.config.image_length)
        known = np.zeros(shape, np.int32) if known is None else known
        kept = np.zeros(shape, bool) if kept is None else kept
        return sampler.start(self.params, put(tokenized.input_ids[prompt_rows]),
                             put(tokenized.attention_mask[prompt_rows]),
                             put(tokenized.input_ids_uncond[prompt_rows]),
                             put(tokenized.attention_mask_uncond[prompt_rows]), put(keys), traced,
                             put(known), put(kept), sharding.put(np.int32(kept_prefix(kept)),
                                                                 sharding.replicated(self.mesh)))

    def _images(self, tokens: jax.Array, rows: list[tuple[str, int, int]], seed: int) -> list[GeneratedImage]:
        pixels = vqgan_module.to_uint8(sharding.to_host(self._decode(self.vqgan_params, tokens)))
        codes = sharding.to_host(tokens)
        return [GeneratedImage(prompt, prompt_index, image_index, seed, codes[slot], pixels[slot])
                for slot, (prompt, prompt_index, image_index) in enumerate(rows)]
