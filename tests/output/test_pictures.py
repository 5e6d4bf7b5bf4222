"""What is made from a run's saved pictures: CLIP's best-first grids (`nbkit.output.pictures`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import GOLDEN, tiny_pipeline
from PIL import Image

from nbkit.output import pictures
from nbkit.output.rerank import Reranker
from tests.output.test_runs import PROMPTS, generate, pngs

FIXTURES = GOLDEN


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(max_batch=2)


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
