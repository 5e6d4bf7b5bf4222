"""A job → a run folder of saved images, resumable: the one writer (`RunWriter`) and the one driver
(`save_run`) of every front end — the CLI, the notebook form and code cells; the server's worker feeds
the same writer batch by batch.

`save_run(pipe, spec, out)` turns a spec (`Generate`, `Vary`, `Extend`, `Fill`; `nbkit.generation.specs`)
into its request, streams it, saves each batch as it arrives and shows every event on the caller's
`View` (`nbkit.generation.stream`): a run that is stopped (the view's `stop`, Ctrl-C or a crash) keeps
every finished image, and the same job again makes only the images its folder lacks. An `Extend` with
`times` is a chain: each piece extends the one before, then the whole is decoded as one stitched picture.
What is done with a run later is in `nbkit.output.pictures` (upscale, seamless, rerank) and
`nbkit.output.reproduction`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import jax
import numpy as np
from unidecode import unidecode

from nbkit.generation.events import GeneratedImage, Generation
from nbkit.generation.from_image import Extend, SourceImage
from nbkit.generation.pipeline import Pipeline
from nbkit.generation.request import GenerationRequest
from nbkit.generation.specs import Spec
from nbkit.generation.stream import Collected, View, show
from nbkit.generation.token_grids import stitched_tokens, tokens_sha256
from nbkit.output.pictures import read_pixels
from nbkit.output.records import ImageRecord, run_key
from nbkit.output.reproduction import prng_partitionable
from nbkit.output.storage import RunFolder, edit_suffix, slugify
from nbkit.png import png_bytes


@dataclasses.dataclass(frozen=True)
class Opened:
    """A run's first event: its request (the seed drawn), what is already saved and what is left to make.
    `folder` is None while a new run has saved nothing (its folder is made with its first image): read it
    from `writer.folder` later; `writer` None: nothing is saved (`save_run` without `out`)."""

    kind: ClassVar[str] = "opened"

    folder: RunFolder | None
    already_saved: int
    to_make: int
    missing: list[tuple[int, int]] = dataclasses.field(default_factory=list, repr=False)
    writer: RunWriter | None = dataclasses.field(default=None, repr=False, compare=False)
    request: GenerationRequest | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def already_complete(self) -> bool:
        return self.to_make == 0


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
                       jax_version=jax.__version__, jax_threefry_partitionable=prng_partitionable(),
                       negative_prompt=image.negative_prompt,
                       kept_mask=kept.mask_hex() if kept is not None and kept.count else "",
                       source=request.source, kept_logprob=image.kept_logprob if kept is not None else None,
                       replica=replica, translation=_translation_of(image, request),
                       batch_size=image.batch_size, batch_row=image.batch_row, dtype=image.dtype,
                       weight_storage=image.weight_storage)


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
                      else read_pixels(self.folder.image_path(on_disk[pair])) for pair in pairs]
            if pixels:
                grids.append(self.folder.save_grid(pixels, prompt, prompt_index))
        return grids


@dataclasses.dataclass
class SavedRun:
    """What `save_run` made: the run's folder (None when nothing is saved), the images made this time (in
    the order of the request's images), and how many were saved before. A chain (`Extend` with `times`)
    also has its pieces' PNGs and the stitched picture."""

    folder: RunFolder | None
    generation: Generation
    already_saved: int = 0
    stopped: bool = False
    pieces: list[Path] = dataclasses.field(default_factory=list)
    picture: Path | None = None


def save_run(pipe: Pipeline, job: Spec | GenerationRequest, out: str | Path | None, *, source: Any = None,
             view: View | Callable[[Any], Any] | None = None, grid: bool = True,
             progress_every: int | None = None) -> SavedRun:
    """Makes `job` into its run folder under `out`, each batch saved as it arrives, then a captioned grid
    per prompt (`grid`); returns what was made. `job`: a spec (an edit's `source` is any image
    `Pipeline.source` opens), or a request already built. The same job again (same prompts, seed, count,
    model and settings) reopens its folder and makes only the images it lacks; a complete one makes none.
    `view`: what to show of each event (`Opened` first, then the stream's), or one callable for every event
    (a notebook cell's `ProgressLine`); its `stop` ends the run after any event. `out` None: nothing is
    saved, the images are only shown and returned."""
    if view is not None and not isinstance(view, View):
        view = View(opened=view, progress=view, batch=view, done=view)
    start = pipe.source(source) if getattr(job, "needs_source", False) else None
    request = job if isinstance(job, GenerationRequest) else job.request(start)
    writer = RunWriter.open(pipe.name, request, out) if out is not None else None
    collected, stopped = Collected(), False
    chain = job if isinstance(job, Extend) and job.times is not None else None
    events = (_chain_events(pipe, chain, request, writer, start, progress_every) if chain is not None
              else _events(pipe, request, writer, grid, progress_every))
    seen = collected.view(**{kind: getattr(view, kind, None) for kind in ("opened", "progress", "batch",
                                                                          "done")})
    with contextlib.closing(events):
        for event in events:
            show(event, seen)
            if view is not None and view.stop is not None and view.stop(event):
                stopped = True
                break
    folder = writer.folder if writer is not None else None
    run = SavedRun(folder, Generation(collected.images, request, pipe.name, collected.timings),
                   writer.already_saved if writer is not None else 0, stopped)
    if chain is not None:
        run.pieces, run.picture = _stitch(pipe, chain, request, writer, start)
    return run


def _events(pipe: Pipeline, request: GenerationRequest, writer: RunWriter | None, grid: bool,
            progress_every: int | None) -> Iterator[Any]:
    """`Opened`, then the pipeline's stream for what the folder lacks, each `Batch` saved before it is
    passed on and the grids made at `Done`."""
    missing = writer.missing if writer is not None else list(request.images)
    yield Opened(writer.folder if writer else None, writer.already_saved if writer else 0, len(missing),
                 missing, writer, request)
    saving = View() if writer is None else View(batch=lambda event: [writer.save(i) for i in event.images],
                                                done=lambda event: writer.finish(grid))
    for event in pipe.stream(dataclasses.replace(request, only=missing), progress_every):
        show(event, saving)
        yield event


def _chain_events(pipe: Pipeline, edit: Extend, chain: GenerationRequest, writer: RunWriter | None,
                  start: SourceImage, progress_every: int | None) -> Iterator[Any]:
    """An extension chain's events: `Opened` for the whole chain, then each missing piece's stream. Piece
    i is image i of the chain's request (its key from (seed, 0, i)) and extends the piece before it (saved
    earlier or just made), which it records, so `reproduce` makes each piece again."""
    saved = _saved_pieces(writer)
    missing = [(0, index) for index in range(chain.n_images) if index not in saved]
    yield Opened(writer.folder if writer else None, len(saved), len(missing), missing, writer, chain)
    previous = start
    for index in range(chain.n_images):
        if index in saved:
            tokens, name = np.asarray(saved[index]["tokens"], np.int32), saved[index]["file"]
        else:
            piece, made = edit.piece(chain, previous, index), []
            saving = View(batch=lambda event, piece=piece, made=made: made.extend(
                (image, writer.save(image, made_by=piece) if writer else None)   # it records what it extends
                for image in event.images))
            for event in pipe.stream(piece, progress_every):
                show(event, saving)
                yield event
            image, path = made[0]
            tokens, name = image.tokens, path.name if path else f"piece {index}"
        previous = SourceImage(tokens, chain.prompts[0], chain.negative_prompt[0], name)


def _saved_pieces(writer: RunWriter | None) -> dict[int, dict]:
    if writer is None or writer.folder is None:
        return {}
    return {e.get("image_index"): e for e in writer.folder.entries() if e.get("prompt_index") == 0}


def _stitch(pipe: Pipeline, edit: Extend, chain: GenerationRequest, writer: RunWriter | None,
            start: SourceImage) -> tuple[list[Path], Path | None]:
    """A chain's pieces, and once all are saved, the whole stitched picture beside them: its token grid
    decoded as one image, so there are no seams."""
    if writer is None or writer.folder is None:
        return [], None
    saved = _saved_pieces(writer)
    entries = [saved[index] for index in range(chain.n_images) if index in saved]
    pieces = [writer.folder.image_path(entry) for entry in entries]
    if len(entries) < chain.n_images:            # stopped before its end: no whole picture yet
        return pieces, None
    grid = stitched_tokens(start.tokens, [np.asarray(e["tokens"], np.int32) for e in entries],
                           edit.direction, edit.rows)
    prompt, times = chain.prompts[0], chain.n_images
    metadata = {"kind": "extended", "prompt": prompt, "direction": edit.direction,
                "rows": edit.rows, "source": start.describe(), "pieces": [p.name for p in pieces],
                "seed": chain.seed, "grid_shape": list(grid.shape), "tokens": grid.reshape(-1).tolist()}
    picture = writer.folder.write_png(f"{slugify(prompt)}_s{chain.seed}_{edit.direction}_x{times}",
                                      png_bytes(pipe.decode_grid(grid), metadata))
    return pieces, picture
