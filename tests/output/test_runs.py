"""Generate into a run folder, resume it, reproduce an image from its PNG, rerank the folder."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import GOLDEN, assert_pixels_within_one_level, tiny_pipeline
from PIL import Image

from nbkit.generation.pipeline import GenerationRequest, Pipeline
from nbkit.generation.sampling import SamplingSettings
from nbkit.generation.specs import Generate
from nbkit.generation.stream import View, collect
from nbkit.output import pictures, runs
from nbkit.output.reproduction import reproduce
from nbkit.output.rerank import Reranker
from nbkit.png import png_bytes, read_png_metadata

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


def test_a_crafted_record_cannot_make_reproduce_enumerate(pipe, tmp_path):
    """A record names one image; reproduce makes that image alone, whatever its indexes, and indexes
    past any run are refused at once."""
    from nbkit.generation.request import ImageTask
    from nbkit.generation.sampling import SamplingSettings

    task = ImageTask("a red cube", 3, prompt_index=70_000, image_index=900)
    events = pipe.stream_tasks([task], SamplingSettings())
    image = collect(events).images[0]
    far = GenerationRequest([" "], 1, 3)            # the settings of a plain request
    record = runs.record_of(image, pipe.name, far)
    png = tmp_path / "far.png"
    png.write_bytes(png_bytes(image.pixels, record.to_metadata()))
    made = reproduce(pipe, png)
    assert made.tokens_match and made.pixels_differing == 0 and made.image.prompt_index == 70_000
    metadata = record.to_metadata()
    for name in ("prompt_index", "image_index"):
        crafted = tmp_path / f"{name}.png"
        crafted.write_bytes(png_bytes(image.pixels, {**metadata, name: 2**31}))
        with pytest.raises(ValueError, match=f"{name} must be a whole number in \\[0, 1048576\\)"):
            reproduce(pipe, crafted)


def test_a_saved_png_reproduces_its_image(pipe, tmp_path):
    folder, generation = generate(pipe, PROMPTS, tmp_path, n_images=2, seed=21, top_k=8)
    target = next(e for e in folder.entries() if e["prompt_index"] == 1 and e["image_index"] == 1)
    again = reproduce(pipe, folder.path / target["file"]).check().image
    assert (again.prompt_index, again.image_index, again.seed) == (1, 1, 21)
    assert again.tokens.tolist() == target["tokens"]
    # Made alone, not in its batch of four: the README's contract, pixels within one level in few values.
    assert_pixels_within_one_level(again.pixels, np.asarray(Image.open(folder.path / target["file"])))


def test_a_png_records_its_batch_shape_and_one_saved_before_that_still_reproduces(pipe, tmp_path):
    """Each PNG names the batch shape it was drawn in and its row, and reproduce draws it there (what half
    precision needs, tests/test_reproduce_dtypes.py); a PNG without them (saved by an older nbkit) is drawn
    alone, as before — float32's contract, the same tokens in any shape. A crafted shape is refused."""
    folder, _ = generate(pipe, PROMPTS, tmp_path, n_images=3, seed=23)    # 6 in 2s
    entries = sorted(folder.entries(), key=lambda e: (e["prompt_index"], e["image_index"]))
    assert [(e["batch_size"], e["batch_row"]) for e in entries] == [(2, r) for r in (0, 1, 0, 1, 0, 1)]
    png = folder.image_path(entries[3])
    metadata = read_png_metadata(png)
    assert (metadata["batch_size"], metadata["batch_row"], metadata["dtype"]) == (2, 1, "float32")
    made = reproduce(pipe, png)
    assert made.tokens_match and (made.image.batch_size, made.image.batch_row) == (2, 1)
    assert made.pixels_differing == 0                     # the same shape and row: the same decode too
    old = tmp_path / "old.png"
    metadata = {k: v for k, v in metadata.items() if k not in ("batch_size", "batch_row")}
    old.write_bytes(png_bytes(np.asarray(Image.open(png)), metadata))
    made = reproduce(pipe, old)
    assert made.matches and (made.image.batch_size, made.image.batch_row) == (1, 0)
    for size, row in [(0, 0), (4, 4), (4, -1), (2**20, 0), ("4", 0), (4, None), (True, 0)]:
        crafted = tmp_path / "crafted.png"
        crafted.write_bytes(png_bytes(np.asarray(Image.open(png)), {**metadata, "batch_size": size,
                                                                    "batch_row": row}))
        with pytest.raises(ValueError, match="batch_size must be a whole number from 1 to 1024"):
            reproduce(pipe, crafted)
    crafted.write_bytes(png_bytes(np.asarray(Image.open(png)), {**metadata, "dtype": "float8"}))
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16, float16"):
        reproduce(pipe, crafted)
    tokens = [(token + 1) % 64 for token in metadata["tokens"]]      # other tokens, said to be bfloat16's
    crafted.write_bytes(png_bytes(np.asarray(Image.open(png)), {**metadata, "dtype": "bfloat16",
                                                                "tokens": tokens}))
    with pytest.raises(ValueError, match="made in bfloat16, and this pipeline runs float32 .*bfloat16"):
        reproduce(pipe, crafted).check()


def test_reproduce_refuses_another_model_and_checks_the_tokens(pipe, tmp_path):
    folder, _ = generate(pipe, PROMPTS[:1], tmp_path, n_images=1, seed=6)
    png = folder.image_path(folder.entries()[0])
    other = Pipeline(pipe.model, pipe.params, pipe.tokenizer, pipe.vqgan, pipe.vqgan_params, pipe.mesh,
                     name="mega")
    with pytest.raises(ValueError, match="made with the model .* but this pipeline runs 'mega'"):
        reproduce(other, png)
    metadata = read_png_metadata(png)
    metadata["tokens"] = [(t + 1) % 64 for t in metadata["tokens"][:10]] + metadata["tokens"][10:]
    tampered = tmp_path / "tampered.png"
    tampered.write_bytes(png_bytes(np.asarray(Image.open(png)), metadata))
    with pytest.raises(ValueError, match="differs from the recorded one in 10 of 256 tokens"):
        reproduce(pipe, tampered).check()


def test_reproduce_uses_the_recorded_prng_setting(pipe, tmp_path):
    """An image made under the other threefry setting (jax's default changed in 0.5) is made again."""
    before = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", not before)
    try:
        folder, _ = generate(pipe, PROMPTS[:1], tmp_path, n_images=1, seed=13)
    finally:
        jax.config.update("jax_threefry_partitionable", before)
    png = folder.image_path(folder.entries()[0])
    assert read_png_metadata(png)["jax_threefry_partitionable"] is (not before)
    again = reproduce(pipe, png).check()
    assert again.tokens.tolist() == folder.entries()[0]["tokens"]
    assert jax.config.jax_threefry_partitionable is before                    # and the setting is restored


def test_rerank_a_saved_folder(pipe, tmp_path):
    folder, _ = generate(pipe, PROMPTS, tmp_path, n_images=3, seed=2)
    reranker = Reranker.from_folder(FIXTURES / "clip-tiny")
    ranking = pictures.rerank_folder(folder.path, reranker)
    assert [(group["prompt_index"], group["prompt"]) for group in ranking] == list(enumerate(PROMPTS))
    for group in ranking:
        entries = [e for e in folder.entries() if e["prompt_index"] == group["prompt_index"]]
        images = [Image.open(folder.image_path(e)) for e in entries]
        scores = reranker.scores(images, [group["prompt"]] * len(images))
        expected = [entries[i]["file"] for i in np.argsort(-scores, kind="stable")]
        assert [r["file"] for r in group["images"]] == expected                # best first, by CLIP's scores
        assert [r["score"] for r in group["images"]] == pytest.approx(sorted(scores, reverse=True), abs=1e-6)
        assert (folder.path / group["grid"]).is_file()
    assert json.loads((folder.path / pictures.RANKING_FILE).read_text()) == ranking
    assert len(pngs(folder.path, "_ranked")) == 2
    assert pictures.rerank_folder(folder.path, reranker) == ranking          # a second time replaces them
    assert len(pngs(folder.path, "_ranked")) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no saved images"):
        pictures.rerank_folder(tmp_path / "empty", reranker)


def test_rerank_keeps_a_prompt_given_twice_as_two_groups(pipe, tmp_path):
    folder, _ = generate(pipe, ["a red cube", "a red cube"], tmp_path, n_images=2, seed=3)
    ranking = pictures.rerank_folder(folder.path, Reranker.from_folder(FIXTURES / "clip-tiny"))
    assert [(g["prompt_index"], g["prompt"], len(g["images"])) for g in ranking] == [(0, "a red cube", 2),
                                                                                      (1, "a red cube", 2)]
    assert len(json.loads((folder.path / pictures.RANKING_FILE).read_text())) == 2


def test_a_failed_rerank_leaves_the_previous_ranking_whole(pipe, tmp_path, monkeypatch):
    folder, _ = generate(pipe, PROMPTS[:1], tmp_path, n_images=2, seed=3)
    reranker = Reranker.from_folder(FIXTURES / "clip-tiny")
    ranked = pictures.rerank_folder(folder.path, reranker)
    first = (folder.path / pictures.RANKING_FILE).read_bytes() if ranked else b""

    def disk_full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("os.fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        pictures.rerank_folder(folder.path, reranker)
    assert (folder.path / pictures.RANKING_FILE).read_bytes() == first
    assert not [p for p in folder.path.iterdir() if p.name.startswith(".")]       # no temp file left behind


def test_a_crafted_manifest_cannot_reach_outside_its_folder(pipe, tmp_path):
    folder, _ = generate(pipe, PROMPTS[:1], tmp_path / "runs", n_images=1, seed=3)
    secret = tmp_path / "secret.png"
    secret.write_bytes((folder.image_path(folder.entries()[0])).read_bytes())
    entry = {**folder.entries()[0], "file": "../../secret.png", "image_index": 1}
    with open(folder.path / "manifest.jsonl", "a") as manifest:
        manifest.write(json.dumps(entry) + "\n")
    with pytest.raises(ValueError, match="not a file directly in"):
        pictures.rerank_folder(folder.path, Reranker.from_folder(FIXTURES / "clip-tiny"))
