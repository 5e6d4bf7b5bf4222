"""A request → a run folder of saved images, resumable; and what is done with it later:
reproduce an image from its PNG, rerank a folder with CLIP. The notebooks and the CLI share these.

`stream_to_folder` consumes the Pipeline's stream and saves each batch as it arrives, so a run
that is stopped (by leaving the loop, Ctrl-C or a crash) keeps every finished image, and the same
request again makes only the images its folder lacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
from unidecode import unidecode

from nbkit.checks import is_whole_number
from nbkit.generation.from_image import Extend, SourceImage
from nbkit.generation.kept import KeptTokens
from nbkit.generation.pipeline import (
    Batch,
    Done,
    Event,
    GeneratedImage,
    Generation,
    GenerationRequest,
    Pipeline,
)
from nbkit.generation.request import ImageTask, check_seed
from nbkit.generation.sampling import SamplingSettings
from nbkit.generation.token_grids import seamless_tokens, stitched_tokens, tokens_sha256
from nbkit.imagefile import read_rgb
from nbkit.limits import MAX_SOURCE_PIXELS
from nbkit.output.atomic import atomic_replace
from nbkit.output.images import make_grid
from nbkit.output.records import UPSCALED_FROM, ImageRecord, run_key
from nbkit.output.storage import RunFolder, edit_suffix, slugify
from nbkit.output.upscaled import UPSCALER_KEY, Reproduced, reproduce_upscaled, upscale_files
from nbkit.png import png_bytes, read_png_metadata
from nbkit.text.tokenizer import check_prompts

RANKING_FILE = "ranking.json"


@dataclasses.dataclass(frozen=True)
class Opened:
    """The first event of `stream_to_folder`: what is already saved and what is left to make. `folder`
    is None while a new run has saved nothing (its folder is made with its first image): read it from
    `writer.folder` later."""

    folder: RunFolder | None
    already_saved: int
    to_make: int
    missing: list[tuple[int, int]] = dataclasses.field(default_factory=list, repr=False)
    writer: RunWriter | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def already_complete(self) -> bool:
        return self.to_make == 0


def _prng_setting() -> bool:
    return bool(jax.config.jax_threefry_partitionable)


def _translation_of(image: GeneratedImage, request: GenerationRequest):
    """The translation of the request's prompt the image was drawn from; None for an image whose index is
    not one of the request's prompts (a task made again from a record)."""
    index = image.prompt_index
    return request.translations[index] if 0 <= index < len(request.translations) else None


def record_of(image: GeneratedImage, model: str, request: GenerationRequest,
              replica: str = "") -> ImageRecord:
    kept = image.kept
    return ImageRecord(image.prompt, image.prompt_index, image.image_index, image.seed, model,
                       dataclasses.asdict(request.settings), tokens=tuple(image.tokens.tolist()),
                       jax_version=jax.__version__, jax_threefry_partitionable=_prng_setting(),
                       negative_prompt=image.negative_prompt,
                       kept_mask=kept.mask_hex() if kept is not None and kept.count else "",
                       source=request.source, kept_logprob=image.kept_logprob if kept is not None else None,
                       replica=replica, translation=_translation_of(image, request),
                       batch_size=image.batch_size, batch_row=image.batch_row, dtype=image.dtype)


def request_run_key(model: str, request: GenerationRequest) -> str:
    """What identifies a request's run: prompts, seed, count, model, settings, negative prompts and
    kept tokens (see `records.run_key`)."""
    kept = [None if k is None else tokens_sha256(np.concatenate([k.tokens, k.mask])) for k in request.kept]
    return run_key(request.prompts, request.seed, request.n_images, model,
                   dataclasses.asdict(request.settings), request.negative_prompt, kept)


class RunWriter:
    """The one writer of runs, under every front end (CLI, notebook form, server): a request's images
    saved into its run folder under `out`, each as soon as it is made, then a captioned grid per prompt.

        writer = RunWriter.open(model, request, out)   # finds the folder of an identical earlier request
        writer.missing                                 # (prompt, image) pairs still to make, in order
        path = writer.save(image)                      # a GeneratedImage → its PNG (also if saved before)
        grids = writer.finish(grid=True)               # one grid per prompt, from the pixels in memory

    A new run's folder is made when its first image is saved, so a request that fails before any image
    leaves no empty folder. Threads: a writer is for one request and is not safe to call from two threads
    at once (the server calls a job's writer from its worker thread only); writers of different runs may
    be used from different threads — every file is written atomically and never overwrites another.
    """

    def __init__(self, model: str, request: GenerationRequest, out: str | Path, folder: RunFolder | None):
        self.model, self.request, self.out = model, request, Path(out)
        self.folder = folder
        self.key = request_run_key(model, request)
        self._saved_this_time: dict[tuple[int, int], np.ndarray] = {}
        saved = {(e.get("prompt_index"), e.get("image_index")) for e in folder.entries()} if folder else set()
        self.already_saved = len(saved)
        self.missing = [pair for pair in dataclasses.replace(request, only=None).images if pair not in saved]

    @classmethod
    def open(cls, model: str, request: GenerationRequest, out: str | Path,
             runs: dict[str, RunFolder] | None = None) -> RunWriter:
        """A writer for `request`: into the folder an identical earlier request made under `out` (so that
        only what it lacks is made), else into a new folder, made with the first image. `runs`: an
        index of `out` (`RunFolder.index`) kept in memory by the caller, instead of a scan of `out`."""
        key = request_run_key(model, request)
        return cls(model, request, out, runs.get(key) if runs is not None else RunFolder.find(Path(out), key))

    def make_folder(self) -> RunFolder:
        """The run's folder, made now if it has none (`save` makes it with the first image; the server
        makes it up front, so that its clients know the run's name at once)."""
        if self.folder is None:
            request = self.request
            typed = (request.translations[0] or {}).get("typed_prompt")
            named = unidecode(typed) if typed else None     # a readable form of the prompt as typed
            self.folder = RunFolder.create(self.out, request.prompts, self.key, name_from=named,
                                           expected_images=len(request.prompts) * request.n_images,
                                           suffix=edit_suffix(request.source))
        return self.folder

    def save(self, image: GeneratedImage, made_by: GenerationRequest | None = None,
             replica: str = "") -> Path:
        """Saves one image of the request with its record (making the run's folder first if it has none)
        and returns its PNG's path — also when it was saved before (then it is not written again).
        `made_by`: the request that made it, when not the writer's own (each piece of an extension chain
        extends the one before, and records that); `replica`: the Ray Serve replica that made it."""
        record = record_of(image, self.model, made_by or self.request, replica=replica)
        path = self.make_folder().save_image(image.pixels, record)
        self._saved_this_time[image.prompt_index, image.image_index] = image.pixels
        return path

    def finish(self, grid: bool = True) -> list[Path]:
        """Saves a captioned grid per prompt (its images in order: those made now from memory, earlier
        ones from their PNGs) when this writer saved any image; returns the grids' paths."""
        if not grid or not self._saved_this_time or self.folder is None:
            return []
        on_disk = {(e.get("prompt_index"), e.get("image_index")): e for e in self.folder.entries()}
        grids = []
        for prompt_index, prompt in enumerate(self.request.prompts):
            pairs = sorted(pair for pair in {*on_disk, *self._saved_this_time} if pair[0] == prompt_index)
            pixels = [self._saved_this_time[pair] if pair in self._saved_this_time
                      else _read_pixels(self.folder.image_path(on_disk[pair])) for pair in pairs]
            if pixels:
                grids.append(self.folder.save_grid(pixels, prompt, prompt_index))
        return grids


def upscale_saved(folder: RunFolder, upscaler: Any, files: list[str] | None = None,
                  progress: Any = None) -> list[Path]:
    """A run's saved images (all, or those named in `files`) upscaled together, each saved beside its
    source (`nbkit.output.upscaled`) and listed in the manifest with its source's prompt and indexes, so
    that galleries and the server show it with the run; returns the upscaled PNGs in order. Only images
    the manifest lists as made are taken (not grids, not upscaled copies): a ValueError names any other."""
    entries = {e["file"]: e for e in folder.entries() if isinstance(e.get("file"), str)}
    names = list(entries) if files is None else list(files)
    for name in names:
        if name not in entries:
            raise ValueError(f"Run {folder.path.name} has no image {name!r} to upscale: name one of its "
                             "images as its manifest lists them (not a grid or an upscaled copy).")
    saved = upscale_files(upscaler, [folder.image_path(entries[name]) for name in names], None, progress)
    for name, path in zip(names, saved, strict=True):
        metadata = read_png_metadata(path)
        source = entries[name]
        copied = {key: source[key] for key in ("prompt", "prompt_index", "image_index", "seed", "model")
                  if key in source}
        folder.list_upscaled(path, {UPSCALED_FROM: metadata[UPSCALED_FROM],
                                    UPSCALER_KEY: metadata[UPSCALER_KEY], "size": metadata.get("size"),
                                    **copied})
    return saved


def upscale_image(upscaler: Any, image: str | Path, progress: Any = None) -> Path:
    """One picture file upscaled beside it: an image of an nbkit run through `upscale_saved` (so its run
    lists the copy), any other picture by `upscale_files`. Returns the upscaled PNG."""
    path = Path(image)
    folder = RunFolder(path.parent)
    if any(entry.get("file") == path.name for entry in folder.entries()):
        return upscale_saved(folder, upscaler, [path.name], progress)[0]
    return upscale_files(upscaler, [path], None, progress)[0]


def is_upscaled(png: str | Path) -> bool:
    """Whether a PNG's metadata says it was upscaled from another (rather than drawn from tokens)."""
    try:
        return UPSCALED_FROM in read_png_metadata(Path(png))
    except ValueError:
        return False


def _read_pixels(path: Path) -> np.ndarray:
    return np.asarray(read_rgb(path))


def stream_to_folder(pipe: Pipeline, request: GenerationRequest, out: str | Path, grid: bool = True,
                     progress_every: int | None = None) -> Iterator[Opened | Event]:
    """The pipeline's stream for `request`, saving each `Batch` into a run folder under `out` before
    it is passed on. First yields `Opened`. The same request again (same prompts, seed, count, model
    and settings) reopens its folder and makes only the images it lacks; a complete one makes none."""
    writer = RunWriter.open(pipe.name, request, out)
    missing = writer.missing
    yield Opened(writer.folder, writer.already_saved, len(missing), missing, writer)
    for event in pipe.stream(dataclasses.replace(request, only=missing), progress_every):
        if isinstance(event, Batch):
            for image in event.images:
                writer.save(image)
        elif isinstance(event, Done):
            writer.finish(grid)
        yield event


def make_to_folder(pipe: Pipeline, request: GenerationRequest, out: str | Path,
                   grid: bool = True, on_event: Callable[[Any], None] | None = None
                   ) -> tuple[RunFolder, Generation]:
    """`stream_to_folder` run to its end: the folder, and the images made this time. `on_event` sees every
    event (a notebook cell's `ProgressLine`)."""
    writer, images, timings = None, [], {}
    for event in stream_to_folder(pipe, request, out, grid):
        if on_event is not None:
            on_event(event)
        if isinstance(event, Opened):
            writer = event.writer
        elif isinstance(event, Batch):
            images += event.images
        elif isinstance(event, Done):
            timings = event.timings
    return writer.folder, Generation(images, request, pipe.name, timings)


def generate_to_folder(pipe: Pipeline, prompts: list[str], out: str | Path, n_images: int = 1,
                       seed: int | None = None, grid: bool = True, negative_prompt: str | list[str] = "",
                       translations: list[dict | None] | None = None,
                       on_event: Callable[[Any], None] | None = None,
                       **sampling: Any) -> tuple[RunFolder, Generation]:
    """Prompts → a run folder (see `make_to_folder`); `translations`: what was typed before the prompts
    were translated (`nbkit.text.translate.translate_prompts`), recorded with the images."""
    request = GenerationRequest(prompts, n_images, seed, SamplingSettings(**sampling),
                                negative_prompt=negative_prompt, translations=translations)
    return make_to_folder(pipe, request, out, grid, on_event)


def newest_image(root: str | Path) -> Path | None:
    """The newest single image (one with its tokens recorded) in the run folders under `root`, or None."""
    found = []
    for manifest in Path(root).glob("*/manifest.jsonl"):
        folder = RunFolder(manifest.parent)
        for entry in folder.entries():
            with contextlib.suppress(ValueError, OSError):
                path = folder.image_path(entry)
                if entry.get("tokens") and path.is_file():
                    found.append((path.stat().st_mtime, path.name, path))
    return max(found)[2] if found else None


def extend_to_folder(pipe: Pipeline, source: Any, edit: Extend, out: str | Path,
                     times: int = 1) -> tuple[RunFolder, list[Path], Path]:
    """A picture extended `times` times (`edit`: direction, rows, seed, prompt…), each piece from the
    one before, saved as it is made into one run folder, then the whole stitched picture: its token grid
    decoded as one image, so there are no seams. Returns (folder, pieces' PNGs, the stitched PNG).

    Piece i is image i of the chain's request (its key from (seed, 0, i)), and records the piece it
    extends, so `reproduce` makes each piece again; the same call again resumes an interrupted chain
    from the pieces already saved."""
    if not is_whole_number(times) or times < 1:
        raise ValueError(f"times must be a whole number ≥ 1 (got {times!r}).")
    if edit.n_images != 1:
        raise ValueError("An extension chain makes one piece at a time: leave n_images at 1, use times.")
    start = pipe.source(source)
    chain = dataclasses.replace(edit, n_images=times).request(start)       # draws the seed once
    writer = RunWriter.open(pipe.name, chain, out)
    saved = {e.get("image_index"): e for e in (writer.folder.entries() if writer.folder else ())
             if e.get("prompt_index") == 0}
    piece_edit = dataclasses.replace(edit, n_images=times, seed=chain.seed, prompt=chain.prompts[0],
                                     negative_prompt=chain.negative_prompt[0],
                                     translation=chain.translations[0])     # what was typed, kept
    previous, pieces, piece_tokens = start, [], []
    for index in range(times):
        if index in saved:
            entry = saved[index]
            tokens, path = np.asarray(entry["tokens"], np.int32), writer.folder.image_path(entry)
        else:
            request = dataclasses.replace(piece_edit.request(previous), only=[(0, index)])
            image = pipe.collect(request).images[0]
            path = writer.save(image, made_by=request)       # each piece records the piece it extends
            tokens = image.tokens
        pieces.append(path)
        piece_tokens.append(tokens)
        previous = SourceImage(tokens, chain.prompts[0], chain.negative_prompt[0], path.name)
    grid = stitched_tokens(start.tokens, piece_tokens, edit.direction, edit.rows)
    metadata = {"kind": "extended", "prompt": chain.prompts[0], "direction": edit.direction,
                "rows": edit.rows, "source": start.describe(), "pieces": [p.name for p in pieces],
                "seed": chain.seed, "grid_shape": list(grid.shape), "tokens": grid.reshape(-1).tolist()}
    stitched = writer.folder.write_png(f"{slugify(chain.prompts[0])}_s{chain.seed}_{edit.direction}_x{times}",
                                       png_bytes(pipe.decode_grid(grid), metadata))
    return writer.folder, pieces, stitched


def save_seamless(pipe: Pipeline, folder: RunFolder, prompt_index: int, columns: int | None = None) -> Path:
    """A prompt's saved images decoded together as one seamless picture (see `Pipeline.seamless`)."""
    entries = sorted((e for e in folder.entries() if e.get("prompt_index") == prompt_index
                      and e.get("tokens")), key=lambda e: e["image_index"])
    if not entries:
        raise ValueError(f"{folder.path} has no saved images with tokens for prompt {prompt_index + 1}.")
    grid = seamless_tokens([np.asarray(e["tokens"], np.int32) for e in entries], columns)
    prompt = entries[0]["prompt"]
    metadata = {"kind": "seamless", "prompt": prompt, "prompt_index": prompt_index,
                "files": [e["file"] for e in entries], "grid_shape": list(grid.shape),
                "tokens": grid.reshape(-1).tolist()}
    return folder.write_png(f"{prompt_index:03d}_{slugify(prompt)}_seamless",
                            png_bytes(pipe.decode_grid(grid), metadata))


def saved_pixels(folder: RunFolder, prompt_index: int) -> list[np.ndarray]:
    """A prompt's saved images, in image order."""
    entries = sorted((e for e in folder.entries() if e.get("prompt_index") == prompt_index),
                     key=lambda e: e["image_index"])
    return [_read_pixels(folder.image_path(e)) for e in entries]


@contextlib.contextmanager
def _prng(partitionable: bool | None):
    """The PRNG implementation an image was made with (jax changed its default in 0.5)."""
    before = _prng_setting()
    if partitionable is not None:
        jax.config.update("jax_threefry_partitionable", partitionable)
    try:
        yield
    finally:
        jax.config.update("jax_threefry_partitionable", before)


@dataclasses.dataclass(frozen=True)
class Reproduction:
    """An image made again from its PNG, and how it compares with the saved one. The README's contract:
    the same tokens, and pixels within one level (the VQGAN's sums may run in another order)."""

    png: Path
    image: GeneratedImage
    recorded_tokens: tuple[int, ...]
    tokens_differing: int           # of the recorded tokens
    pixels_differing: int           # pixels (any channel) that differ from the saved PNG's by > 0 levels
    most_levels: int                # the largest difference of any channel, in levels of 255

    @property
    def tokens_match(self) -> bool:
        return bool(self.recorded_tokens) and self.tokens_differing == 0

    @property
    def within_contract(self) -> bool:
        return self.tokens_match and self.most_levels <= 1


def record_task(record: ImageRecord) -> tuple[ImageTask, SamplingSettings]:
    """The one image a record describes, as a task — built directly, not by listing the request it was
    part of (a crafted record may name prompt 2³¹; `ImageRecord` bounds what it may say)."""
    kept = None
    if record.kept_mask:     # kept tokens come out exactly as given: the image's own tokens hold them
        kept = KeptTokens.from_record(np.asarray(record.tokens), record.kept_mask)
    try:
        settings = SamplingSettings(**dict(record.settings))
    except TypeError as error:
        raise ValueError(f"The recorded settings {dict(record.settings)!r} are not sampling "
                         "settings.") from error
    check_prompts([record.prompt])
    return ImageTask(record.prompt, check_seed(record.seed), record.prompt_index, record.image_index,
                     record.negative_prompt, kept), settings


def reproduce_png(pipe: Pipeline | None, png: str | Path,
                  cache: str | Path | None = None) -> Reproduction | Reproduced:
    """Makes the image a saved PNG records again and compares it with the saved one (tokens and pixels),
    in the batch shape its record names (`Pipeline.make_again`), so that also in bfloat16 and float16 the
    tokens are the same, whatever `max_batch` this pipeline has. One entry for every kind: an upscaled PNG
    (its metadata names its source and upscaler) is made again from the source beside it by
    `reproduce_upscaled` (no pipeline needed; its upscaler from `cache`).

    The pipeline must run the model the PNG names: another model makes another image, so that is an
    error rather than a silent difference."""
    png = Path(png)
    if is_upscaled(png):
        return reproduce_upscaled(png, cache=cache)
    if pipe is None:
        raise ValueError(f"{png} was drawn by a DALL·E model: give a Pipeline to make it again.")
    record = ImageRecord.from_metadata(read_png_metadata(png))
    if record.model != pipe.name:
        raise ValueError(f"{png} was made with the model {record.model!r}, but this pipeline runs "
                         f"{pipe.name!r}: load that model (Pipeline.from_pretrained({record.model!r}) "
                         f"or --model) to reproduce it.")
    task, settings = record_task(record)
    with _prng(record.jax_threefry_partitionable):     # in the batch shape it was drawn in (any dtype)
        image = pipe.make_again(task, settings, record.batch_size, record.batch_row)
    recorded = record.tokens
    differing = (int(np.sum(np.asarray(recorded) != image.tokens)) if len(recorded) == len(image.tokens)
                 else len(image.tokens))
    saved_levels = np.asarray(read_rgb(png), np.int16)
    if saved_levels.shape != image.pixels.shape:
        raise ValueError(f"{png} is {saved_levels.shape[1]}×{saved_levels.shape[0]} px, not one image "
                         f"of this model ({image.pixels.shape[1]}×{image.pixels.shape[0]}).")
    levels = np.abs(saved_levels - image.pixels)
    return Reproduction(png, image, recorded, differing, int((levels.max(axis=-1) > 0).sum()),
                        int(levels.max()))


def reproduce(pipe: Pipeline | None, png: str | Path,
              cache: str | Path | None = None) -> GeneratedImage | np.ndarray:
    """Makes the image a saved PNG records again, and checks that its tokens are the recorded ones
    (see `reproduce_png`). Pixels may differ by one level on other devices (see README). An upscaled
    PNG is made again from its source and returned as pixels, checked within one level."""
    made = reproduce_png(pipe, png, cache)
    if isinstance(made, Reproduced):
        if not made.matches:
            raise ValueError(f"{png}: made again, it differs from the saved picture by up to "
                             f"{made.max_difference} levels (more than one).")
        return made.pixels
    if made.recorded_tokens and not made.tokens_match:
        record = ImageRecord.from_metadata(read_png_metadata(png))
        if record.dtype is not None and record.dtype != pipe.dtype:
            raise ValueError(f"{png}: the regenerated image differs from the recorded one in "
                             f"{made.tokens_differing} of {len(made.recorded_tokens)} tokens: it was made in "
                             f"{record.dtype}, and this pipeline runs {pipe.dtype} (load it with "
                             f"dtype={record.dtype!r}, or --dtype {record.dtype}).")
        raise ValueError(f"{png}: the regenerated image differs from the recorded one in "
                         f"{made.tokens_differing} of {len(made.recorded_tokens)} tokens. It was made with "
                         f"jax {record.jax_version} (this is jax {jax.__version__}); a jax whose random "
                         f"numbers differ cannot make it again.")
    return made.image


def rerank_folder(folder: str | Path, reranker: Any) -> list[dict[str, Any]]:
    """Scores a run folder's images against their prompts with CLIP; writes `ranking.json` and, per
    prompt, a best-first grid with the scores. Returns, per prompt in prompt order,
    {"prompt_index", "prompt", "grid", "images": [{"file", "image_index", "score"}, … best first]}.
    Prompts are told apart by their index: the same text given twice keeps two groups."""
    run = RunFolder.open(Path(folder))
    damage = run.damage()
    if damage:
        raise ValueError(f"Run {run.path.name} is damaged ({damage[0]}"
                         f"{f', and {len(damage) - 1} more' if len(damage) > 1 else ''}): fix or remove "
                         "those lines before reranking it.")
    entries = [e for e in run.entries() if run.image_path(e).is_file()]
    if not entries:
        raise ValueError(f"{folder} has no saved images (no manifest.jsonl entries): "
                         "pick a run folder made by nbkit, e.g. one printed by `python -m nbkit generate`.")
    by_prompt: dict[int, list[dict]] = {}
    for entry in entries:
        by_prompt.setdefault(entry["prompt_index"], []).append(entry)
    ranking = []
    for prompt_index, group in sorted(by_prompt.items()):
        group.sort(key=lambda e: e["image_index"])
        prompt = group[0]["prompt"]
        images = [read_rgb(run.image_path(e), max_pixels=MAX_SOURCE_PIXELS) for e in group]
        scores = reranker.scores(images, [prompt] * len(images))
        order = sorted(range(len(group)), key=lambda i: -scores[i])
        ranked = [{"file": group[i]["file"], "image_index": group[i]["image_index"],
                   "score": float(scores[i])} for i in order]
        caption = prompt + "  |  CLIP: " + " ".join(f"{r['image_index']:03d}: {r['score']:.2f}"
                                                    for r in ranked)
        data = png_bytes(make_grid([np.asarray(images[i]) for i in order], caption=caption),
                         {"kind": "ranked grid", "prompt": prompt, "prompt_index": prompt_index,
                          "ranking": ranked})
        grid = f"{prompt_index:03d}_{slugify(prompt)}_ranked.png"      # derived: a new ranking replaces it
        atomic_replace(run.path / grid, data)
        ranking.append({"prompt_index": prompt_index, "prompt": prompt, "grid": grid, "images": ranked})
    atomic_replace(run.path / RANKING_FILE, json.dumps(ranking, indent=1, ensure_ascii=False).encode())
    return ranking
