"""A batch of prompts → a run folder of saved images, resumable; and what is done with it later:
reproduce an image from its PNG, rerank a folder with CLIP. The notebooks and the CLI share these.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from nbkit.generation.pipeline import (
    GeneratedImage,
    Generation,
    Pipeline,
    Progress,
    draw_seed,
)
from nbkit.generation.sampling import SamplingSettings
from nbkit.output.images import make_grid, png_bytes, read_png_metadata
from nbkit.output.storage import ImageRecord, RunFolder, atomic_write, run_key, slugify

RANKING_FILE = "ranking.json"


def generate_to_folder(pipe: Pipeline, prompts: list[str], out: str | Path, n_images: int = 1,
                       seed: int | None = None, grid: bool = True,
                       on_progress: Callable[[Progress], None] | None = None,
                       should_stop: Callable[[], bool] | None = None, progress_every: int = 32,
                       **sampling: Any) -> tuple[RunFolder, Generation]:
    """Generates and saves each batch as it finishes. With an explicit seed, running the same
    batch again reopens its unfinished folder and makes only the images it lacks."""
    settings = SamplingSettings(**sampling)
    seed = draw_seed() if seed is None else seed
    key = run_key(prompts, seed, n_images, pipe.name, dataclasses.asdict(settings))
    folder = RunFolder.resume_or_create(Path(out), prompts, key, len(prompts) * n_images)
    saved = {(e.get("prompt_index"), e.get("image_index")) for e in folder.entries()}
    missing = [(p, i) for p in range(len(prompts)) for i in range(n_images) if (p, i) not in saved]

    def save(batch: list[GeneratedImage]) -> None:
        for image in batch:
            folder.save_image(image.pixels, ImageRecord(image.prompt, image.prompt_index, image.image_index, seed,
                                                        pipe.name, dataclasses.asdict(settings)))

    generation = pipe.generate(prompts, n_images=n_images, seed=seed, on_progress=on_progress,
                               should_stop=should_stop, progress_every=progress_every, on_batch=save, only=missing,
                               **dataclasses.asdict(settings))
    if grid and missing and not generation.stopped:
        for prompt_index, prompt in enumerate(prompts):
            folder.save_grid(saved_pixels(folder, prompt_index), prompt, prompt_index)
    return folder, generation


def saved_pixels(folder: RunFolder, prompt_index: int) -> list[np.ndarray]:
    """A prompt's saved images, in image order."""
    entries = sorted((e for e in folder.entries() if e.get("prompt_index") == prompt_index),
                     key=lambda e: e["image_index"])
    return [np.asarray(Image.open(folder.path / e["file"]).convert("RGB")) for e in entries]


def reproduce(pipe: Pipeline, png: str | Path) -> GeneratedImage:
    """Makes the image a saved PNG records again (same model and settings give the same pixels)."""
    record = ImageRecord.from_metadata(read_png_metadata(png))
    prompts = [" "] * record.prompt_index + [record.prompt]     # the image's key uses its prompt's index
    settings = dict(record.settings)
    generation = pipe.generate(prompts, n_images=record.image_index + 1, seed=record.seed,
                               only=[(record.prompt_index, record.image_index)], **settings)
    return generation.images[0]


def rerank_folder(folder: str | Path, reranker: Any) -> dict[str, list[dict[str, Any]]]:
    """Scores a run folder's images against their prompts with CLIP; writes `ranking.json` and,
    per prompt, a best-first grid with the scores; returns {prompt: [{file, score}] best first}."""
    run = RunFolder.open(Path(folder))
    entries = [e for e in run.entries() if "file" in e and (run.path / e["file"]).is_file()]
    if not entries:
        raise ValueError(f"{folder} has no saved images (no manifest.jsonl entries): pick a run folder made by "
                         "nbkit, e.g. one printed by `python -m nbkit generate`.")
    by_prompt: dict[tuple[int, str], list[dict]] = {}
    for entry in entries:
        by_prompt.setdefault((entry["prompt_index"], entry["prompt"]), []).append(entry)
    ranking = {}
    for (prompt_index, prompt), group in sorted(by_prompt.items()):
        images = [Image.open(run.path / e["file"]).convert("RGB") for e in group]
        ranked = reranker.rank(images, [prompt] * len(images))[prompt]
        ranking[prompt] = [{"file": group[r.index]["file"], "score": round(float(r.score), 4)} for r in ranked]
        best_first = [np.asarray(images[r.index]) for r in ranked]
        caption = prompt + "  |  CLIP: " + " ".join(f"{r.score:.1f}" for r in ranked)
        data = png_bytes(make_grid(best_first, caption=caption),
                         {"kind": "ranked grid", "prompt": prompt, "ranking": ranking[prompt]})
        run.write_png(f"{prompt_index:03d}_{slugify(prompt)}_ranked", data)
    _write_json(run.path, RANKING_FILE, ranking)
    return ranking


def _write_json(folder: Path, name: str, value: Any) -> None:
    path = folder / name
    if path.exists():
        path.unlink()        # the ranking is derived data: a new one replaces the old
    atomic_write(path, json.dumps(value, indent=1, ensure_ascii=False).encode())
