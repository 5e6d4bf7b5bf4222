"""Prompts → images, on whatever devices are here: the one object notebooks, the CLI and `runs` use.

`Pipeline.stream(request)` is the one way to generate: a generator of events, in the manner of
min-dalle's `generate_image_stream` and gemma's sampler state. It yields `Progress` while a batch
forms (its stage, tokens so far, the time left, and its images decoded only if asked for), a `Batch` of
finished images as
each batch ends, and `Done` with the timings. Stopping is leaving the loop; saving is the
consumer's job (`nbkit.output.runs` saves each batch as it comes). `generate()` collects a stream.

Each image's random key comes from (seed, prompt index, image index) alone, and every row of a
batch is sampled independently, so the same seed gives the same image tokens on 1 GPU, 8 TPU cores
or a CPU. Every batch is padded to one shape, `max_batch` rows (see `Pipeline`), so an image's tokens
do not depend on the batch it was drawn in, in any dtype; sampling settings are traced values: new
prompts, seeds or settings reuse the compiled programs.

The events and results are `nbkit.generation.events`; the pure batching rules (keys, padded rows, batches
of one kept prefix), `nbkit.generation.batches`; the request side, `nbkit.generation.specs` and `.request`;
the event dispatch and collecting, `nbkit.generation.stream`.

A little over 350 lines: what is left is one object's state (the loaded models, the mesh, the compiled
programs already run and the pace learned from them), which loading, the stream, `make_again` and the
decode all read and write, so splitting it further would pass that state between modules.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nbkit.checks import is_whole_number
from nbkit.generation import sharding
from nbkit.generation.batches import batches_of, image_keys, padded_size
from nbkit.generation.device import detect, use_compilation_cache
from nbkit.generation.events import Batch, Done, Event, GeneratedImage, Generation, Progress
from nbkit.generation.from_image import Edit, Extend, Fill, SourceImage, Vary, open_source
from nbkit.generation.progress import Pace
from nbkit.generation.request import GenerationRequest, ImageTask
from nbkit.generation.sampling import CompiledSampler, SamplingSettings, compiled_sampler, kept_prefix
from nbkit.generation.specs import Generate
from nbkit.generation.stream import collect
from nbkit.generation.token_grids import Direction, seamless_tokens
from nbkit.models import vqgan as vqgan_module
from nbkit.models.dallebart import DalleBart
from nbkit.text.tokenizer import PromptTokenizer
from nbkit.weights import hub
from nbkit.weights.loaders import load_dallebart, load_vqgan, load_vqgan_encoder
from nbkit.weights.stored import choose_storage, storage_of


class Pipeline:
    """Generation on the devices of `mesh`. Every batch runs in one compiled shape, `max_batch` rows
    (padded with copies of its first task): XLA picks kernels by shape (matrix-vector for one row, blocked
    products for more, other reductions from 128 rows up), so the last bits of a logit differ between
    batch sizes, and in bfloat16 or float16 that is enough to flip a token near a tie. In one shape, a
    row's tokens depend on its own task only, not on how many others share its batch, nor where it sits.
    Each image records that shape (`batch_size`, `batch_row`) and `make_again` reproduces it there, also
    in a pipeline of another `max_batch`. The cost: a batch of fewer images runs all its rows (on a CPU a
    lone image takes longer; on an accelerator a step reads every weight whatever the batch, so little),
    see docs/speed.md; `max_batch=1` (`--max-batch 1`) is the fastest for one image at a time.
    """

    def __init__(self, model: DalleBart, params: Any, tokenizer: PromptTokenizer,
                 vqgan: vqgan_module.VQGANDecoder, vqgan_params: Any, mesh: jax.sharding.Mesh,
                 max_batch: int | None = None, name: str = "model", vqgan_folder: str | Path | None = None):
        self.model, self.params, self.tokenizer = model, params, tokenizer
        self.vqgan_folder = vqgan_folder     # where the encoder's weights are, when an image is encoded
        self.vqgan, self.vqgan_params, self.mesh, self.name = vqgan, vqgan_params, mesh, name
        data = sharding.data_size(mesh)
        per_device = 8 if mesh.devices.flat[0].platform != "cpu" else 4
        self.max_batch = max_batch or data * per_device
        if self.max_batch % data:
            raise ValueError(f"max_batch={self.max_batch} must be a multiple of the {data} data-parallel "
                             "devices.")
        self._decode = vqgan_module.compiled_decoder(vqgan)
        self._warm: set[tuple[int, bool]] = set()     # (batch size, super-conditioned) programs already run
        self.pace = Pace()                            # step and decode times, learned run by run
        self._decoded_sizes: set[int] = set()         # batch sizes whose decode has compiled

    @property
    def dtype(self) -> str:
        """The compute dtype's name (float32, bfloat16, float16): recorded with every image."""
        return jnp.dtype(self.model.dtype).name

    @cached_property
    def weight_storage(self) -> str:
        """How the DalleBart kernels are kept (float32, bfloat16, int8: `nbkit.weights.stored`), read
        from the weights once (they are not replaced after loading): recorded with every image, since the
        narrower ones draw other tokens."""
        return storage_of(self.params, self.model.dtype)

    def cut_prompts(self, prompts: Sequence[str], negative_prompts: Sequence[str] = ()) -> tuple[str, ...]:
        """The prompts (and negative prompts) longer than this model reads: they would be cut."""
        return tuple(self.tokenizer.cut([*prompts, *negative_prompts]))

    @classmethod
    def from_pretrained(cls, model: str | Path = "mini", vqgan: str | Path = "vqgan", dtype: Any = None,
                        model_parallel: int = 1, max_batch: int | None = None,
                        cache: str | Path | None = None,
                        progress: bool = True, devices: list | None = None,
                        compilation_cache: str | Path | None = None,
                        weight_storage: str = "float32") -> Pipeline:
        """Named models (see `nbkit.weights.registry`), hub ids, W&B artifacts or local folders.

        `dtype`: default the device's recommended one. `model_parallel`: split each weight
        matrix over that many devices (for Mega on cores that cannot hold it, e.g. TPU v2).
        `compilation_cache`: a folder (e.g. on Drive) where compiled programs are kept, so
        that the next session does not compile again. `weight_storage`: DalleBart's kernels kept as
        float32, bfloat16 or int8 (float32 arithmetic, so `dtype` float32 only; "auto": the fastest here;
        `nbkit.weights.stored`).
        """
        if compilation_cache is not None:
            use_compilation_cache(compilation_cache)
        dtype = jnp.dtype(dtype or detect().recommended_dtype)
        weight_storage = choose_storage(weight_storage, dtype)     # refused or resolved before any loading
        mesh = sharding.make_mesh(model_parallel, devices)
        folder = hub.fetch(model, cache, progress, kind="dallebart")
        vqgan_folder = hub.fetch(vqgan, cache, progress, kind="vqgan")
        dallebart, params = load_dallebart(folder, dtype, place=sharding.weight_placer(mesh),
                                          weight_storage=weight_storage)
        decoder, decoder_params = load_vqgan(vqgan_folder, dtype)
        return cls(dallebart, params, PromptTokenizer.from_folder(folder), decoder,
                   sharding.put_tree(decoder_params, mesh), mesh, max_batch,
                   name=hub.recorded_name(model, folder),
                   vqgan_folder=vqgan_folder)

    # ---- starting from an image

    @cached_property
    def _encoder(self):
        if self.vqgan_folder is None:
            raise ValueError("This pipeline was built without its VQGAN folder, so it cannot encode images: "
                             "use Pipeline.from_pretrained, or pass vqgan_folder=.")
        model, params = load_vqgan_encoder(self.vqgan_folder, jnp.float32)
        return model, params

    def encode_image(self, image: Any) -> np.ndarray:
        """Any image (path, PIL image, array) → its (256,) tokens. The encoder is loaded on first use."""
        model, params = self._encoder
        pixels = vqgan_module.image_to_pixels(image, model.config.resolution)
        return vqgan_module.encode(model, params, pixels[None])[0]

    def source(self, image: Any) -> SourceImage:
        """What `vary`, `extend` and `fill` start from (see `nbkit.generation.from_image.open_source`)."""
        return open_source(image, self.encode_image)

    def vary(self, source: Any, n_images: int = 4, keep_rows: int = 8, seed: int | None = None,
             prompt: str | None = None, negative_prompt: str | None = None,
             settings: SamplingSettings | None = None) -> Generation:
        """Variations of an image: its first `keep_rows` rows of tokens (of 16) kept, the rest drawn anew
        (0: new images from the prompt; 16: the source's tokens). `source`: a PNG nbkit saved (its tokens
        and prompt come from its metadata), a GeneratedImage, or any image (encoded; give `prompt`)."""
        return self.edit(source, Vary(keep_rows=keep_rows, n_images=n_images, seed=seed, prompt=prompt,
                                      negative_prompt=negative_prompt,
                                      settings=settings or SamplingSettings()))

    def extend(self, source: Any, direction: Direction = "down", rows: int = 8, n_images: int = 1,
               seed: int | None = None, prompt: str | None = None, negative_prompt: str | None = None,
               settings: SamplingSettings | None = None) -> Generation:
        """The picture continued `down` or to the `right` by `rows` (1–15) rows or columns of tokens: the
        grid moves up or left, what is still inside is kept, the new band is drawn."""
        return self.edit(source, Extend(direction=direction, rows=rows, n_images=n_images, seed=seed,
                                        prompt=prompt, negative_prompt=negative_prompt,
                                        settings=settings or SamplingSettings()))

    def fill(self, source: Any, region: tuple[int, int, int, int], n_images: int = 8, seed: int | None = None,
             prompt: str | None = None, negative_prompt: str | None = None,
             settings: SamplingSettings | None = None, reranker: Any = None) -> Generation:
        """A region (top, left, bottom, right, in token cells of 16 px) drawn anew, everything else kept.
        The model cannot see the kept tokens after the hole while drawing it, so `n_images` candidates are
        drawn and returned best first by how likely the model finds those kept tokens afterwards
        (`kept_logprob`). With a `reranker` (CLIP: `nbkit.output.rerank.Reranker`), the better half by that
        measure is then ordered by CLIP score against the prompt, the other half following."""
        generation = self.edit(source, Fill(region=region, n_images=n_images, seed=seed, prompt=prompt,
                                            negative_prompt=negative_prompt,
                                            settings=settings or SamplingSettings()))
        images = generation.images
        images.sort(key=lambda image: -image.kept_logprob)
        if reranker is not None and images:
            better = images[:(len(images) + 1) // 2]
            scores = reranker.scores([image.pixels for image in better], [image.prompt for image in better])
            images[:len(better)] = [better[i] for i in np.argsort(-np.asarray(scores), kind="stable")]
        return generation

    def edit(self, source: Any, edit: Edit) -> Generation:
        """Any edit (`Vary`, `Extend`, `Fill`) of `source` (see `vary`), its images in request order."""
        return self.collect(edit.request(self.source(source)))

    def decode_grid(self, tokens: np.ndarray) -> np.ndarray:
        """A (rows, columns) grid of tokens of any size → one uint8 picture of (16·rows, 16·columns) px:
        the VQGAN decodes it as one image, so pieces laid side by side blend without seams."""
        return vqgan_module.to_uint8(vqgan_module.decode_grid(self.vqgan, self.vqgan_params, tokens))

    def seamless(self, images: Sequence[GeneratedImage], columns: int | None = None) -> np.ndarray:
        """Images' tokens laid out as a grid (`columns` wide, default square) and decoded as one picture,
        so the cells blend into one large image (min-dalle's `is_seamless`)."""
        return self.decode_grid(seamless_tokens([image.tokens for image in images], columns))

    def sampler(self, settings: SamplingSettings) -> CompiledSampler:
        return compiled_sampler(self.model, self.vqgan.config.n_embed, settings.super_conditioned, self.mesh)

    def generate(self, prompts: Sequence[str], n_images: int = 1, seed: int | None = None,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 condition_scale: float = 10.0, only: Collection[tuple[int, int]] | None = None,
                 negative_prompt: str | Sequence[str] = "") -> Generation:
        """`n_images` images for each prompt, all at once. `seed` None draws one (see `.seed`)."""
        spec = Generate(prompts=prompts, n_images=n_images, seed=seed, negative_prompt=negative_prompt,
                        settings=SamplingSettings(temperature, top_k, top_p, condition_scale))
        request = spec.request()
        return self.collect(request if only is None else dataclasses.replace(request, only=only))

    def collect(self, request: GenerationRequest) -> Generation:
        """The whole stream's images, in the request's order (batches group tasks by kept prefix)."""
        collected = collect(self.stream(request))
        return Generation(collected.images, request, self.name, collected.timings)

    def stream(self, request: GenerationRequest, progress_every: int | None = None) -> Iterator[Event]:
        """Generates `request`, yielding `Progress` every `progress_every` tokens (and at the start of
        each batch), a `Batch` of finished images as each batch ends, and `Done` last.

        `progress_every=None` samples each batch in one compiled call (the fastest): only the
        start-of-batch `Progress` (stage compiling or drawing) and its `decoding` one are yielded then.
        Every `Progress` names its stage and the time left (`nbkit.generation.progress`). Leave the loop
        to stop; finished batches stay with the consumer. A batch's `decoding` Progress comes after its
        last token: a consumer that wants every drawn image stops at a `drawing` one, not there.
        """
        if not isinstance(request, GenerationRequest):
            raise TypeError(f"stream takes a GenerationRequest (got {type(request).__name__}); "
                            "for prompts, use generate().")
        return self.stream_tasks(request.tasks(), request.settings, progress_every)

    def stream_tasks(self, tasks: Sequence[ImageTask], settings: SamplingSettings,
                     progress_every: int | None = None) -> Iterator[Event]:
        """`stream` for any list of images to make — from several requests at once, as the server's
        worker packs them; batches take the tasks in order, `max_batch` at a time, each batch holding
        tasks of one kept prefix only (see `nbkit.generation.batches.batches_of`): `Batch.batch` says
        which tasks it made."""
        if progress_every is not None and not (is_whole_number(progress_every) and progress_every >= 1):
            raise ValueError(f"progress_every must be a whole number ≥ 1 or None (got {progress_every!r}).")
        tasks = list(tasks)
        self._check_tasks(tasks)
        plan = [(indexes, tuple(range(len(indexes))), self.max_batch)
                for indexes in batches_of(tasks, self.max_batch)]
        return self._stream(tasks, plan, settings, progress_every)

    def make_again(self, task: ImageTask, settings: SamplingSettings, batch_size: int | None = None,
                   batch_row: int | None = None) -> GeneratedImage:
        """One image drawn again in the shape it was first drawn in: a batch of `batch_size` rows (padded
        with copies of it), it at `batch_row` — the same tokens in any dtype, whatever this pipeline's
        `max_batch`. None (an image recorded before the shape was): the smallest batch, as it was then.
        A size that the data-parallel devices here do not divide is rounded up to one they do."""
        self._check_tasks([task])
        data = sharding.data_size(self.mesh)
        size = padded_size(batch_size or 1, data)
        row = batch_row or 0
        if not 0 <= row < size:
            raise ValueError(f"batch_row {row} is outside a batch of {size} rows.")
        events = self._stream([task], [((0,), (row,), size)], settings, None)
        return collect(events).images[0]

    def _check_tasks(self, tasks: list[ImageTask]) -> None:
        length, codes = self.model.config.image_length, self.vqgan.config.n_embed
        for task in tasks:
            if not isinstance(task, ImageTask):
                raise TypeError(f"stream_tasks takes ImageTasks (got {type(task).__name__}).")
            kept = task.kept
            if kept is not None and (len(kept.tokens) != length or int(kept.tokens.max(initial=0)) >= codes):
                raise ValueError(f"Kept tokens must be {length} codes below {codes} for this model (got "
                                 f"{len(kept.tokens)} up to {int(kept.tokens.max(initial=0))}): they come "
                                 "from another VQGAN.")

    def _stream(self, tasks: list[ImageTask], plan: list[tuple[tuple[int, ...], tuple[int, ...], int]],
                settings: SamplingSettings, progress_every: int | None) -> Iterator[Event]:
        """`plan`: per batch, the tasks it makes (their indexes), the row each sits at, and its rows;
        the other rows are copies of its first task (one kept prefix: see `batches_of`)."""
        started = time.perf_counter()
        timings = {"tokens": 0.0, "pixels": 0.0}
        sampler = self.sampler(settings)
        traced = jax.tree.map(lambda value: sharding.put(value, sharding.replicated(self.mesh)),
                              settings.as_arrays(self.model.config))
        length = self.model.config.image_length
        total, done = len(tasks), 0
        every = progress_every or length
        # Only the rows asked for, never the padding: the person is told about the prompts they typed.
        cut = self.cut_prompts([task.prompt for task in tasks], [task.negative_prompt for task in tasks])
        pace = self.pace
        for number, (indexes, slots, size) in enumerate(plan):
            chosen = [tasks[index] for index in indexes]
            padded = [chosen[0]] * size
            for slot, task in zip(slots, chosen, strict=True):
                padded[slot] = task
            program = (size, sampler.super_conditioned)
            compiling = program not in self._warm
            later = [later_size for _, _, later_size in plan[number + 1:]]

            def decode(tokens: jax.Array, logprob=None, chosen=chosen, slots=slots,
                       size=size) -> list[GeneratedImage]:
                began = time.perf_counter()
                cold = size not in self._decoded_sizes
                images = self._images(tokens, chosen, slots, logprob)
                seconds = time.perf_counter() - began
                self._decoded_sizes.add(size)
                pace.learn_decode(size, seconds, compiled=cold)
                timings["pixels"] += seconds
                return images

            rows_now = len(chosen)

            def progress(position: int, tokens: jax.Array | None = None, stage: str = "drawing", done=done,
                         rows_now=rows_now, decode=decode, indexes=indexes, size=size,
                         later=later) -> Progress:
                steps = [(size, length - position), *((other, length) for other in later)]
                decodes = [size, *later] if stage != "saving" else later
                left, timed = (None, False) if stage == "compiling" else pace.seconds_left(steps, decodes)
                return Progress(done * length + position * rows_now, total * length, done, total,
                                time.perf_counter() - started, stage == "compiling", position, tokens, decode,
                                batch=indexes, stage=stage, seconds_left=left, decode_timed=timed, cut=cut)

            yield progress(0, stage="compiling" if compiling else "drawing")
            began = time.perf_counter()
            state, prefix = self._start(sampler, padded, traced)
            segment = max(prefix, 1)                       # where the steps being timed began
            for begin in range(segment, length, every):
                end = min(begin + every, length)
                state = sampler.advance(self.params, state, traced, begin, end)
                if end < length:
                    snapshot = jnp.copy(state.tokens)      # a copy: the next advance donates the state
                    snapshot.block_until_ready()
                    seconds = time.perf_counter() - began
                    timings["tokens"] += seconds
                    if program in self._warm:               # a compiling call says nothing of the pace
                        pace.learn_steps(size, end - begin, seconds)
                    self._warm.add(program)
                    yield progress(end, snapshot)
                    began, segment = time.perf_counter(), end
            state.tokens.block_until_ready()
            seconds = time.perf_counter() - began
            timings["tokens"] += seconds
            if program in self._warm:
                pace.learn_steps(size, length - segment, seconds)
            self._warm.add(program)
            yield progress(length, stage="decoding")
            images = decode(state.tokens, state.kept_logprob)
            done += len(chosen)
            yield Batch(images, done, total, time.perf_counter() - started, batch=indexes)
        timings["total"] = time.perf_counter() - started
        yield Done(total, timings)

    def _start(self, sampler: CompiledSampler, tasks: list[ImageTask], traced):
        """The sampler's state for one padded batch (prompts encoded, first token drawn, kept prefix run),
        and the length of that prefix: drawing goes on from there."""
        put = lambda value: sharding.put(value, sharding.rows(self.mesh))
        tokenized = self.tokenizer([task.prompt for task in tasks], [task.negative_prompt for task in tasks])
        keys = image_keys(np.array([task.seed for task in tasks], np.int64),
                          np.array([task.prompt_index for task in tasks], np.int64),
                          np.array([task.image_index for task in tasks], np.int64))
        length = self.model.config.image_length
        known = np.zeros((len(tasks), length), np.int32)
        kept = np.zeros((len(tasks), length), bool)
        for row, task in enumerate(tasks):
            if task.kept is not None:
                known[row], kept[row] = task.kept.tokens, task.kept.mask
        prefix = kept_prefix(kept)
        state = sampler.start(self.params, put(tokenized.input_ids), put(tokenized.attention_mask),
                              put(tokenized.input_ids_uncond), put(tokenized.attention_mask_uncond),
                              put(keys), traced, put(known), put(kept),
                              sharding.put(np.int32(prefix), sharding.replicated(self.mesh)))
        return state, prefix

    def _images(self, tokens: jax.Array, tasks: list[ImageTask], slots: Sequence[int],
                logprob=None) -> list[GeneratedImage]:
        pixels = vqgan_module.to_uint8(sharding.to_host(self._decode(self.vqgan_params, tokens)))
        codes = sharding.to_host(tokens)
        logprob = np.zeros(len(codes), np.float32) if logprob is None else sharding.to_host(logprob)
        return [GeneratedImage(task.prompt, task.prompt_index, task.image_index, task.seed, codes[slot],
                               pixels[slot], task.negative_prompt, task.kept,
                               float(logprob[slot]) if task.kept is not None else 0.0,
                               batch_size=len(codes), batch_row=int(slot), dtype=self.dtype,
                               weight_storage=self.weight_storage)
                for slot, task in zip(slots, tasks, strict=True)]
