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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
from PIL import Image

from nbkit.generation.from_image import SourceImage, extension_request
from nbkit.generation.kept import (
    Direction,
    KeptTokens,
    seamless_tokens,
    stitched_tokens,
    tokens_sha256,
    whole,
)
from nbkit.generation.pipeline import (
    Batch,
    Done,
    Event,
    GeneratedImage,
    Generation,
    GenerationRequest,
    Pipeline,
)
from nbkit.generation.sampling import SamplingSettings
from nbkit.output.images import make_grid
from nbkit.output.storage import ImageRecord, RunFolder, atomic_replace, run_key, slugify
from nbkit.png import png_bytes, read_png_metadata

RANKING_FILE = "ranking.json"


@dataclasses.dataclass(frozen=True)
class Opened:
    """The first event of `stream_to_folder`: where the run is saved and what is left to make."""

    folder: RunFolder
    already_saved: int
    to_make: int
    missing: list[tuple[int, int]] = dataclasses.field(default_factory=list, repr=False)

    @property
    def already_complete(self) -> bool:
        return self.to_make == 0


def _prng_setting() -> bool:
    return bool(jax.config.jax_threefry_partitionable)


def record_of(image: GeneratedImage, model: str, request: GenerationRequest,
              replica: str = "") -> ImageRecord:
    kept = image.kept
    return ImageRecord(image.prompt, image.prompt_index, image.image_index, image.seed, model,
                       dataclasses.asdict(request.settings), tokens=tuple(image.tokens.tolist()),
                       jax_version=jax.__version__, jax_threefry_partitionable=_prng_setting(),
                       negative_prompt=request.negative_prompt[image.prompt_index],
                       kept_mask=kept.mask_hex() if kept is not None and kept.count else "",
                       source=request.source, kept_logprob=image.kept_logprob if kept is not None else None,
                       replica=replica)


def open_run(model: str, request: GenerationRequest, out: str | Path) -> Opened:
    """The run folder under `out` for `request` — the one an earlier identical request made (same
    prompts, seed, count, model, settings, negative prompts and kept tokens), else a new one — and what
    it still lacks (`Opened.missing`: (prompt index, image index) pairs, in order)."""
    kept = [None if k is None else tokens_sha256(np.concatenate([k.tokens, k.mask])) for k in request.kept]
    settings = dataclasses.asdict(request.settings)
    key = run_key(request.prompts, request.seed, request.n_images, model, settings, request.negative_prompt,
                  kept)
    folder = RunFolder.resume_or_create(Path(out), request.prompts, key,
                                        len(request.prompts) * request.n_images)
    saved = {(e.get("prompt_index"), e.get("image_index")) for e in folder.entries()}
    missing = [pair for pair in dataclasses.replace(request, only=None).images if pair not in saved]
    return Opened(folder, len(saved), len(missing), missing)


def stream_to_folder(pipe: Pipeline, request: GenerationRequest, out: str | Path, grid: bool = True,
                     progress_every: int | None = None) -> Iterator[Opened | Event]:
    """The pipeline's stream for `request`, saving each `Batch` into a run folder under `out` before
    it is passed on. First yields `Opened`. The same request again (same prompts, seed, count, model
    and settings) reopens its folder and makes only the images it lacks; a complete one makes none."""
    opened = open_run(pipe.name, request, out)
    folder, missing = opened.folder, opened.missing
    yield opened
    for event in pipe.stream(dataclasses.replace(request, only=missing), progress_every):
        if isinstance(event, Batch):
            for image in event.images:
                folder.save_image(image.pixels, record_of(image, pipe.name, request))
        elif isinstance(event, Done) and grid and missing:
            for prompt_index, prompt in enumerate(request.prompts):
                folder.save_grid(saved_pixels(folder, prompt_index), prompt, prompt_index)
        yield event


def make_to_folder(pipe: Pipeline, request: GenerationRequest, out: str | Path,
                   grid: bool = True) -> tuple[RunFolder, Generation]:
    """`stream_to_folder` run to its end: the folder, and the images made this time."""
    folder, images, timings = None, [], {}
    for event in stream_to_folder(pipe, request, out, grid):
        if isinstance(event, Opened):
            folder = event.folder
        elif isinstance(event, Batch):
            images += event.images
        elif isinstance(event, Done):
            timings = event.timings
    return folder, Generation(images, request, pipe.name, timings)


def generate_to_folder(pipe: Pipeline, prompts: list[str], out: str | Path, n_images: int = 1,
                       seed: int | None = None, grid: bool = True, negative_prompt: str | list[str] = "",
                       **sampling: Any) -> tuple[RunFolder, Generation]:
    """Prompts → a run folder (see `make_to_folder`)."""
    request = GenerationRequest(prompts, n_images, seed, SamplingSettings(**sampling),
                                negative_prompt=negative_prompt)
    return make_to_folder(pipe, request, out, grid)


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


def extend_to_folder(pipe: Pipeline, source: Any, direction: Direction, rows: int, out: str | Path,
                     times: int = 1, seed: int | None = None, prompt: str | None = None,
                     negative_prompt: str | None = None,
                     settings: SamplingSettings | None = None) -> tuple[RunFolder, list[Path], Path]:
    """A picture extended `times` times by `rows` rows (`down`) or columns (`right`), each piece from the
    one before, saved as it is made into one run folder, then the whole stitched picture: its token grid
    decoded as one image, so there are no seams. Returns (folder, pieces' PNGs, the stitched PNG).

    Piece i is image i of the chain's request (its key from (seed, 0, i)), and records the piece it
    extends, so `reproduce` makes each piece again; the same call again resumes an interrupted chain."""
    if not whole(times) or times < 1:
        raise ValueError(f"times must be a whole number ≥ 1 (got {times!r}).")
    start = pipe.source(source)
    first = extension_request(start, direction, rows, times, seed, prompt, negative_prompt, settings)
    opened = open_run(pipe.name, first, out)
    folder = opened.folder
    saved = {e.get("image_index"): e for e in folder.entries() if e.get("prompt_index") == 0}
    previous, pieces, piece_tokens = start, [], []
    for index in range(times):
        if index in saved:
            entry = saved[index]
            tokens, path = np.asarray(entry["tokens"], np.int32), folder.image_path(entry)
        else:
            request = extension_request(previous, direction, rows, times, first.seed, first.prompts[0],
                                        first.negative_prompt[0], first.settings)
            request = dataclasses.replace(request, only=[(0, index)])
            image = pipe.collect(request).images[0]
            path = folder.save_image(image.pixels, record_of(image, pipe.name, request))
            tokens = image.tokens
        pieces.append(path)
        piece_tokens.append(tokens)
        previous = SourceImage(tokens, first.prompts[0], first.negative_prompt[0], path.name)
    grid = stitched_tokens(start.tokens, piece_tokens, direction, rows)
    metadata = {"kind": "extended", "prompt": first.prompts[0], "direction": direction, "rows": rows,
                "source": start.describe(), "pieces": [p.name for p in pieces], "seed": first.seed,
                "grid_shape": list(grid.shape), "tokens": grid.reshape(-1).tolist()}
    stitched = folder.write_png(f"{slugify(first.prompts[0])}_s{first.seed}_{direction}_x{times}",
                                png_bytes(pipe.decode_grid(grid), metadata))
    return folder, pieces, stitched


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
    return [np.asarray(Image.open(folder.image_path(e)).convert("RGB")) for e in entries]


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


def reproduce(pipe: Pipeline, png: str | Path) -> GeneratedImage:
    """Makes the image a saved PNG records again, and checks that its tokens are the recorded ones.

    The pipeline must run the model the PNG names: another model makes another image, so that is an
    error rather than a silent difference. Pixels may differ by one level on other devices (see README).
    """
    record = ImageRecord.from_metadata(read_png_metadata(png))
    if record.model != pipe.name:
        raise ValueError(f"{png} was made with the model {record.model!r}, but this pipeline runs "
                         f"{pipe.name!r}: load that model (Pipeline.from_pretrained({record.model!r}) "
                         f"or --model) to reproduce it.")
    prompts = [" "] * record.prompt_index + [record.prompt]     # the image's key uses its prompt's index
    kept = None
    if record.kept_mask:     # kept tokens come out exactly as given: the image's own tokens hold them
        kept = KeptTokens.from_record(np.asarray(record.tokens), record.kept_mask)
    request = GenerationRequest(prompts, record.image_index + 1, record.seed,
                                SamplingSettings(**dict(record.settings)),
                                only=[(record.prompt_index, record.image_index)],
                                negative_prompt=[""] * record.prompt_index + [record.negative_prompt],
                                kept=[None] * record.prompt_index + [kept])
    with _prng(record.jax_threefry_partitionable):
        image = pipe.collect(request).images[0]
    if record.tokens and tuple(image.tokens.tolist()) != record.tokens:
        differ = int(np.sum(np.asarray(record.tokens) != image.tokens))
        raise ValueError(f"{png}: the regenerated image differs from the recorded one in {differ} of "
                         f"{len(record.tokens)} tokens. It was made with jax {record.jax_version} "
                         f"(this is jax {jax.__version__}); a jax whose random numbers differ "
                         f"cannot make it again.")
    return image


def rerank_folder(folder: str | Path, reranker: Any) -> list[dict[str, Any]]:
    """Scores a run folder's images against their prompts with CLIP; writes `ranking.json` and, per
    prompt, a best-first grid with the scores. Returns, per prompt in prompt order,
    {"prompt_index", "prompt", "grid", "images": [{"file", "image_index", "score"}, … best first]}.
    Prompts are told apart by their index: the same text given twice keeps two groups."""
    run = RunFolder.open(Path(folder))
    entries = [e for e in run.entries() if "file" in e and run.image_path(e).is_file()]
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
        images = [Image.open(run.image_path(e)).convert("RGB") for e in group]
        scores = reranker.scores(images, [prompt] * len(images))
        order = sorted(range(len(group)), key=lambda i: -scores[i])
        ranked = [{"file": group[i]["file"], "image_index": group[i]["image_index"],
                   "score": float(scores[i])} for i in order]
        caption = prompt + "  |  CLIP: " + " ".join(f"#{r['image_index'] + 1} {r['score']:.2f}"
                                                    for r in ranked)
        data = png_bytes(make_grid([np.asarray(images[i]) for i in order], caption=caption),
                         {"kind": "ranked grid", "prompt": prompt, "prompt_index": prompt_index,
                          "ranking": ranked})
        grid = f"{prompt_index:03d}_{slugify(prompt)}_ranked.png"      # derived: a new ranking replaces it
        atomic_replace(run.path / grid, data)
        ranking.append({"prompt_index": prompt_index, "prompt": prompt, "grid": grid, "images": ranked})
    atomic_replace(run.path / RANKING_FILE, json.dumps(ranking, indent=1, ensure_ascii=False).encode())
    return ranking
