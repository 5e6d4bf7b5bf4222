"""The form's Model and Upscaler fields offer what is on this machine: DALL·E folders (not the VQGAN's or
CLIP's, which have the same two files) and upscaler weights, in the working folder and the model cache; a
local weights file typed into the Upscaler field upscales; ./mini names the loaded folder."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import GOLDEN, tiny_pipeline

from nbkit.notebook import ui
from nbkit.notebook.local_models import model_folders, names_the_loaded, upscaler_files

DALLE_CONFIG = GOLDEN / "dallebart-tiny" / "config.json"
TINY_UPSCALER = GOLDEN / "esrgan-tiny-x4" / "model.safetensors"


def checkpoint(folder, config=DALLE_CONFIG):
    folder.mkdir(parents=True)
    shutil.copy(config, folder / "config.json")
    (folder / "flax_model.msgpack").write_bytes(b"")
    return folder


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A working folder and a model cache with checkpoints, other models' folders and weights files."""
    here, cache = tmp_path / "work", tmp_path / "cache"
    checkpoint(here / "mini")
    checkpoint(here / "models" / "mega")
    checkpoint(here / "vqgan", GOLDEN / "vqgan-tiny" / "config.json")       # a VQGAN: not a DALL·E model
    checkpoint(here / "clip", GOLDEN / "clip-tiny" / "config.json")
    checkpoint(here / "broken")
    (here / "broken" / "config.json").write_text("{not json")
    checkpoint(cache / "hub" / "dalle-mini--dalle-mini" / "abc123")
    checkpoint(cache / "hub" / "dalle-mini--dalle-mega" / "def456.partial")     # a download under way
    big = checkpoint(here / "big")
    big.joinpath("config.json").write_text(json.dumps({"model_type": "dallebart", "pad": "x" * (2 << 20)}))
    (here / "weights").mkdir()
    shutil.copy(TINY_UPSCALER, here / "weights" / "esrgan-tiny.safetensors")
    (here / "weights" / "resnet50.pth").write_bytes(b"")                    # not an upscaler's name
    (cache / "releases" / "esrgan-x4").mkdir(parents=True)
    (cache / "releases" / "esrgan-x4" / "RealESRGAN_x4plus.pth").write_bytes(b"")
    monkeypatch.chdir(here)
    return here, cache


def test_model_folders_are_the_dalle_checkpoints_here_and_in_the_cache(machine):
    here, cache = machine
    assert model_folders(cache) == ["./mini", "./models/mega",
                                    str(cache.resolve() / "hub" / "dalle-mini--dalle-mini" / "abc123")]
    assert model_folders(cache / "missing", here=here / "weights") == []


def test_upscaler_files_are_the_weights_whose_path_names_an_upscaler(machine):
    _here, cache = machine
    released = cache.resolve() / "releases" / "esrgan-x4" / "RealESRGAN_x4plus.pth"
    assert upscaler_files(cache) == ["./weights/esrgan-tiny.safetensors", str(released)]


def test_a_path_to_the_loaded_folder_names_it(machine):
    here, _cache = machine
    assert names_the_loaded("./mini", str(here.resolve() / "mini"))
    assert names_the_loaded("mini", "mini") and not names_the_loaded("mega", "mini")
    assert not names_the_loaded("./models/mega", str(here.resolve() / "mini"))
    assert not names_the_loaded("mini", "dalle-mini/dalle-mini@abc")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(max_batch=1)


def test_the_form_lists_them_and_upscales_with_a_local_file_typed_in(pipe, machine):
    _here, cache = machine
    form = ui.GenerateForm(pipe, load=lambda name: pipe, cache=cache, progress_every=64)
    assert form.cache == cache
    assert form.model.options[:2] == ("mini", "mega") and form.model.value == pipe.name
    assert {"./mini", "./models/mega", pipe.name} <= set(form.model.options)
    assert "./weights/esrgan-tiny.safetensors" in form.upscaler.options and form.upscaler.value == "esrgan-x4"
    form.prompts.value, form.n_images.value, form.seed.value = "a red cube", 1, "3"
    form.generate()
    form.wait(300)
    assert form.error is None and len(form._finished) == 1
    form.upscaler.value = "./weights/esrgan-tiny.safetensors"              # typed in: a local file
    form.upscale((0, 0))
    form.wait(300)
    assert form.error is None, form.error
    assert form.upscaled[0, 0].shape == (1024, 1024, 3)
    typed = machine[0] / "weights" / "esrgan-tiny.safetensors"
    assert form._upscaler.weights_path.resolve() == typed.resolve()
