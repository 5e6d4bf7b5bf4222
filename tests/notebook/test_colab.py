"""nbkit.notebook.colab.serve: the kernel's server loads the pipeline as `nbkit serve` would."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nbkit.generation.pipeline import Pipeline
from nbkit.notebook import colab
from nbkit.server import launch as launch_module


@pytest.mark.parametrize("storage", ["int8", "auto"])
def test_serve_loads_the_pipeline_with_the_weight_storage_asked_for(tmp_path, monkeypatch, storage):
    started, loaded = [], []

    def launch(options, port, load, *, background):
        started.append((options, port, background))
        load()
        return SimpleNamespace(url="http://127.0.0.1:0/", options=options, stop=lambda: None)

    monkeypatch.setattr(launch_module, "launch", launch)
    monkeypatch.setattr(Pipeline, "from_pretrained", lambda *args, **kwargs: loaded.append((args, kwargs)))
    colab.serve("mini", "vqgan", None, out=tmp_path, port=0, weight_storage=storage)
    (options, port, background), = started
    assert background and port == 0 and options.out == tmp_path.resolve()
    (args, kwargs), = loaded
    assert args == ("mini", "vqgan") and kwargs["weight_storage"] == storage
