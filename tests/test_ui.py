"""The prompt form, driven as a user would: set values, click, read state and output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nbkit.generation.pipeline import Pipeline
from nbkit.notebook import ui
from nbkit.output.images import read_png_metadata

FIXTURES = Path(__file__).parent / "fixtures" / "golden"


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_pretrained(FIXTURES / "dallebart-tiny", FIXTURES / "vqgan-tiny", dtype="float32",
                                    progress=False, max_batch=1)


def form_for(pipe, **kwargs) -> ui.GenerateForm:
    form = ui.GenerateForm(pipe, progress_every=64, decode_every=128, **kwargs)
    form.prompts.value = "a red cube\n\n  an avocado armchair  \n"
    form.n_images.value, form.seed.value, form.top_k.value = 2, "17", 20
    return form


def test_generate_fills_the_gallery_and_saves(pipe, tmp_path):
    form = form_for(pipe, out=tmp_path)
    form.generate_button.click()
    assert form.generate_button.disabled and not form.stop_button.disabled
    form.wait(300)
    assert form.error is None, form.error
    assert len(form.result.images) == 4 and form.result.seed == 17
    assert not form.generate_button.disabled and form.stop_button.disabled
    assert form.progress.value == form.progress.max == 4 * 256
    assert len(form.gallery.children) == 4 and all(cell.children[0].value[:4] == b"\x89PNG"
                                                    for cell in form.gallery.children)
    assert "seed <b>17</b>" in form.status.value and str(form.folder.path) in form.status.value
    saved = sorted(p for p in form.folder.path.glob("*.png") if "_grid" not in p.name)
    assert len(saved) == 4 and read_png_metadata(saved[0])["settings"]["top_k"] == 20
    assert read_png_metadata(saved[0])["prompt"] == "a red cube"


def test_a_double_click_starts_one_run(pipe, monkeypatch):
    calls = []
    original = pipe.generate
    monkeypatch.setattr(pipe, "generate", lambda *a, **k: calls.append(1) or original(*a, **k))
    form = form_for(pipe)
    form.n_images.value = 1
    form.generate_button.click()
    form.generate_button.click()
    form.generate()
    form.wait(300)
    assert len(calls) == 1 and len(form.result.images) == 2


def test_stop_keeps_the_finished_images(pipe, tmp_path):
    form = form_for(pipe, out=tmp_path)
    form.n_images.value = 3
    shown = form._show

    def show_then_stop(progress):
        shown(progress)
        if progress.final:
            form.stop_button.click()            # the user clicks Stop once the first image is done
    form._show = show_then_stop
    form.generate_button.click()
    form.wait(300)
    assert form.result.stopped and 1 <= len(form.result.images) < 6
    assert "Stopped: kept" in form.status.value
    assert len(form.folder.entries()) == len(form.result.images)


def test_a_random_seed_is_drawn_and_shown(pipe):
    form = form_for(pipe)
    form.seed.value, form.n_images.value = "", 1
    form.prompts.value = "a red cube"
    form.generate()
    form.wait(300)
    assert f"seed <b>{form.result.seed}</b>" in form.status.value


@pytest.mark.parametrize("field, value, message", [
    ("prompts", " \n  \n", "at least one prompt"),
    ("seed", "twelve", "seed must be a whole number"),
    ("seed", "-3", "seed must be a whole number"),
])
def test_bad_input_is_a_message_in_the_form(pipe, field, value, message):
    form = form_for(pipe)
    getattr(form, field).value = value
    form.generate()
    form.wait(60)
    assert isinstance(form.error, ValueError) and message in form.status.value
    assert "Traceback" not in form.status.value and not form.generate_button.disabled


def test_read_form_checks_every_setting():
    values = ui.read_form("a\n b \n", 3, " 5 ", 0.8, 10, 0.9, 3.0)
    assert values.prompts == ["a", "b"] and values.seed == 5 and values.sampling["top_k"] == 10
    assert ui.read_form("a", 1, "", 1.0, 50, 1.0, 10.0).seed is None
    with pytest.raises(ValueError, match="temperature"):
        ui.read_form("a", 1, "", 0.0, 50, 1.0, 10.0)
    with pytest.raises(ValueError, match="top_p"):
        ui.read_form("a", 1, "", 1.0, 50, 1.5, 10.0)


def test_show_images_makes_a_captioned_grid():
    images = [np.full((8, 8, 3), value, np.uint8) for value in (0, 128, 255)]
    grid = ui.show_images(images, captions=["0.1", "0.2", "0.3"], columns=2)
    assert len(grid.children) == 3 and grid.children[1].children[1].value == "0.2"
    assert grid.children[0].children[0].value[:4] == b"\x89PNG"
