"""Generate into a run folder, resume it, reproduce an image from its PNG, rerank the folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nbkit.generation.pipeline import Pipeline
from nbkit.output import runs
from nbkit.output.images import read_png_metadata
from nbkit.output.rerank import Reranker

FIXTURES = Path(__file__).parent / "fixtures" / "golden"
PROMPTS = ["a red cube", "an avocado armchair"]


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_pretrained(FIXTURES / "dallebart-tiny", FIXTURES / "vqgan-tiny", dtype="float32",
                                    progress=False, max_batch=2)


def pngs(folder: Path, kind: str = "") -> list[Path]:
    return sorted(p for p in folder.glob("*.png") if kind in p.name)


def test_a_run_folder_holds_images_with_metadata_grids_and_manifest(pipe, tmp_path):
    folder, generation = runs.generate_to_folder(pipe, PROMPTS, tmp_path, n_images=3, seed=9, temperature=0.9)
    images = [p for p in pngs(folder.path) if "_grid" not in p.name]
    assert len(images) == 6 and len(pngs(folder.path, "_grid")) == 2
    assert len(folder.entries()) == 6 and folder.is_complete()
    metadata = read_png_metadata(images[0])
    assert metadata["prompt"] == PROMPTS[0] and metadata["seed"] == 9 and metadata["image_index"] == 0
    assert metadata["settings"] == {"temperature": 0.9, "top_k": None, "top_p": None, "condition_scale": 10.0}
    assert metadata["model"] == pipe.name and metadata["nbkit_version"]
    first = generation.for_prompt(0)[0]
    assert (np.asarray(Image.open(images[0])) == first.pixels).all()
    grid = Image.open(pngs(folder.path, "_grid")[0])
    assert grid.width == 2 * 256 and grid.height > 2 * 256          # 3 images in 2 columns, and a caption


def test_an_interrupted_run_resumes_and_makes_only_the_missing_images(pipe, tmp_path):
    asked = []
    stop_after_first_batch = lambda: asked.append(1) or len(asked) > 255 // 32 + 1
    folder, stopped = runs.generate_to_folder(pipe, PROMPTS, tmp_path, n_images=3, seed=4,
                                              should_stop=stop_after_first_batch)
    assert stopped.stopped and len(folder.entries()) == 2 and not pngs(folder.path, "_grid")
    again, resumed = runs.generate_to_folder(pipe, PROMPTS, tmp_path, n_images=3, seed=4)
    assert again.path == folder.path and len(resumed.images) == 4            # only what was missing
    assert len(folder.entries()) == 6 and len([p for p in pngs(folder.path) if "_grid" not in p.name]) == 6
    fresh, whole = runs.generate_to_folder(pipe, PROMPTS, tmp_path / "fresh", n_images=3, seed=4)
    for image in whole.images:
        saved = next(e for e in folder.entries()
                     if (e["prompt_index"], e["image_index"]) == (image.prompt_index, image.image_index))
        assert (np.asarray(Image.open(folder.path / saved["file"])) == image.pixels).all()
    other_seed, _ = runs.generate_to_folder(pipe, PROMPTS[:1], tmp_path, n_images=1, seed=5)
    assert other_seed.path != folder.path


def test_a_saved_png_reproduces_its_image(pipe, tmp_path):
    folder, generation = runs.generate_to_folder(pipe, PROMPTS, tmp_path, n_images=2, seed=21, top_k=8)
    target = next(e for e in folder.entries() if e["prompt_index"] == 1 and e["image_index"] == 1)
    again = runs.reproduce(pipe, folder.path / target["file"])
    assert (again.prompt_index, again.image_index, again.seed) == (1, 1, 21)
    assert (again.pixels == np.asarray(Image.open(folder.path / target["file"]))).all()


def test_rerank_a_saved_folder(pipe, tmp_path):
    folder, _ = runs.generate_to_folder(pipe, PROMPTS, tmp_path, n_images=3, seed=2)
    reranker = Reranker.from_folder(FIXTURES / "clip-tiny")
    ranking = runs.rerank_folder(folder.path, reranker)
    assert set(ranking) == set(PROMPTS)
    for prompt, ranked in ranking.items():
        scores = [r["score"] for r in ranked]
        assert len(ranked) == 3 and scores == sorted(scores, reverse=True)
        assert {r["file"] for r in ranked} == {e["file"] for e in folder.entries() if e["prompt"] == prompt}
    assert json.loads((folder.path / runs.RANKING_FILE).read_text()) == ranking
    assert len(pngs(folder.path, "_ranked")) == 2
    assert runs.rerank_folder(folder.path, reranker) == ranking                  # a second time is fine
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no saved images"):
        runs.rerank_folder(tmp_path / "empty", reranker)
