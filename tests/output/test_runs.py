"""The one run driver and writer: a spec into a run folder, resumed, stopped, and a folder only for an
image (`nbkit.output.runs`)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import GOLDEN, tiny_pipeline
from PIL import Image

from nbkit.generation.request import GenerationRequest
from nbkit.generation.sampling import SamplingSettings
from nbkit.generation.specs import Generate
from nbkit.generation.stream import View
from nbkit.output import runs
from nbkit.png import read_png_metadata

FIXTURES = GOLDEN
PROMPTS = ["a red cube", "an avocado armchair"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(max_batch=2)


def generate(pipe, prompts, out, n_images=1, seed=None, **sampling):
    """Prompts → (run folder, images made), through the one driver."""
    run = runs.save_run(pipe, Generate(prompts=prompts, n_images=n_images, seed=seed,
                                       settings=SamplingSettings(**sampling)), out)
    return run.folder, run.generation


def pngs(folder: Path, kind: str = "") -> list[Path]:
    return sorted(p for p in folder.glob("*.png") if kind in p.name)


def test_a_run_folder_holds_images_with_metadata_grids_and_manifest(pipe, tmp_path):
    folder, generation = generate(pipe, PROMPTS, tmp_path, n_images=3, seed=9, temperature=0.9)
    images = [p for p in pngs(folder.path) if "_grid" not in p.name]
    assert len(images) == 6 and len(pngs(folder.path, "_grid")) == 2
    assert len(folder.entries()) == 6 and folder.is_complete()
    metadata = read_png_metadata(images[0])
    assert metadata["prompt"] == PROMPTS[0] and metadata["seed"] == 9 and metadata["image_index"] == 0
    assert metadata["settings"] == {"temperature": 0.9, "top_k": None, "top_p": None, "condition_scale": 10.0}
    assert metadata["model"] == pipe.name and metadata["nbkit_version"]
    first = generation.for_prompt(0)[0]
    # the image's identity
    assert metadata["tokens"] == first.tokens.tolist() and len(metadata["tokens"]) == 256
    assert metadata["jax_version"] == jax.__version__
    assert metadata["jax_threefry_partitionable"] == jax.config.jax_threefry_partitionable
    manifest = next(e for e in folder.entries() if (e["prompt_index"], e["image_index"]) == (0, 0))
    assert manifest["tokens"] == first.tokens.tolist() and manifest["file"] == images[0].name
    assert (np.asarray(Image.open(images[0])) == first.pixels).all()
    grid = Image.open(pngs(folder.path, "_grid")[0])
    assert grid.width == 2 * 256 and grid.height > 2 * 256          # 3 images in 2 columns, and a caption


def test_an_interrupted_run_resumes_and_makes_only_the_missing_images(pipe, tmp_path):
    seen = []

    def opened(event):
        assert event.folder is None and list(tmp_path.iterdir()) == []     # made with the first image
        seen.append(event)

    # Stopped after the first batch: it is already saved.
    stopped = runs.save_run(pipe, GenerationRequest(PROMPTS, 3, 4), tmp_path, progress_every=32,
                            view=View(opened=opened, stop=lambda event: event.kind == "batch"))
    assert (seen[0].already_saved, seen[0].to_make) == (0, 6) and stopped.stopped
    folder = seen[0].writer.folder
    assert stopped.folder.path == folder.path and len(stopped.generation.images) == 2
    assert len(folder.entries()) == 2 and not pngs(folder.path, "_grid")
    again, resumed = generate(pipe, PROMPTS, tmp_path, n_images=3, seed=4)
    assert again.path == folder.path and len(resumed.images) == 4            # only what was missing
    assert len(folder.entries()) == 6 and len([p for p in pngs(folder.path) if "_grid" not in p.name]) == 6
    fresh, whole = generate(pipe, PROMPTS, tmp_path / "fresh", n_images=3, seed=4)
    for image in whole.images:
        saved = next(e for e in folder.entries()
                     if (e["prompt_index"], e["image_index"]) == (image.prompt_index, image.image_index))
        assert (np.asarray(Image.open(folder.path / saved["file"])) == image.pixels).all()
    other_seed, _ = generate(pipe, PROMPTS[:1], tmp_path, n_images=1, seed=5)
    assert other_seed.path != folder.path


def test_the_run_writer_makes_a_folder_only_for_an_image_and_hands_back_paths(pipe, tmp_path, monkeypatch):
    request = GenerationRequest(PROMPTS, 2, seed=8)

    def failing(*args, **kwargs):
        raise RuntimeError("the device failed")
        yield

    monkeypatch.setattr(pipe, "stream", failing)
    with pytest.raises(RuntimeError, match="the device failed"):
        runs.save_run(pipe, request, tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []
    monkeypatch.undo()

    images = pipe.collect(request).images
    writer = runs.RunWriter.open(pipe.name, request, tmp_path / "runs")
    assert writer.folder is None and writer.missing == [(0, 0), (0, 1), (1, 0), (1, 1)]
    paths = [writer.save(image) for image in images]
    assert writer.folder is not None and [p.parent for p in paths] == [writer.folder.path] * 4
    assert writer.save(images[2]) == paths[2] and len(writer.folder.entries()) == 4     # saved before
    grids = writer.finish()
    assert len(grids) == 2 and read_png_metadata(grids[1])["prompt"] == PROMPTS[1]
    expected = np.concatenate([images[2].pixels, images[3].pixels], axis=1)
    assert (np.asarray(Image.open(grids[1]).convert("RGB"))[:256] == expected).all()   # from these pixels
    again = runs.RunWriter.open(pipe.name, request, tmp_path / "runs")
    assert again.folder.path == writer.folder.path and again.missing == [] and again.finish() == []


def test_without_a_folder_nothing_is_saved_and_a_callable_view_sees_every_event(pipe, tmp_path):
    seen = []
    run = runs.save_run(pipe, Generate(prompts=PROMPTS, n_images=1, seed=11), None, view=seen.append)
    assert run.folder is None and [event.kind for event in seen][0] == "opened"
    assert [event.kind for event in seen][-1] == "done" and "batch" in [event.kind for event in seen]
    assert seen[0].writer is None and seen[0].to_make == 2 and seen[0].request.seed == 11
    made = {(image.prompt_index, image.image_index): image.tokens.tolist() for image in run.generation.images}
    saved = runs.save_run(pipe, Generate(prompts=PROMPTS, n_images=1, seed=11), tmp_path)
    assert made == {(e["prompt_index"], e["image_index"]): e["tokens"] for e in saved.folder.entries()}
