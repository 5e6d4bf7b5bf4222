"""What is made from a run's saved pictures, after the run: upscaled copies listed with it, a prompt's
images decoded as one seamless picture, CLIP's best-first grids (`rerank_folder`), and finding them
(`newest_image`, `saved_pixels`). The notebooks, the CLI and the server share these.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nbkit.generation.token_grids import seamless_tokens
from nbkit.imagefile import read_rgb
from nbkit.limits import MAX_SOURCE_PIXELS
from nbkit.output.atomic import atomic_replace
from nbkit.output.images import make_grid
from nbkit.output.records import UPSCALED_FROM
from nbkit.output.storage import RunFolder, slugify
from nbkit.output.upscaled import UPSCALER_KEY, upscale_files
from nbkit.png import png_bytes, read_png_metadata

if TYPE_CHECKING:
    from nbkit.generation.pipeline import Pipeline

RANKING_FILE = "ranking.json"


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
    return [read_pixels(folder.image_path(e)) for e in entries]


def read_pixels(path: Path) -> np.ndarray:
    return np.asarray(read_rgb(path))


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
