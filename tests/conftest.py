"""Shared fixtures: where the golden reference outputs live, and a compilation counter."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import jax
import pytest

GOLDEN_DIR = Path(os.environ.get("NBKIT_GOLDEN_DIR", Path(__file__).parent / "fixtures" / "golden"))


def golden_folders(prefix: str) -> list[Path]:
    """Every `<prefix>-*` folder of the golden set; what they hold is read from their files."""
    return sorted(p for p in GOLDEN_DIR.glob(f"{prefix}-*") if (p / "config.json").is_file())


def golden_params(prefix: str):
    folders = golden_folders(prefix)
    if not folders:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no {prefix}-* folder in {GOLDEN_DIR}"))]
    return [pytest.param(folder, id=folder.name) for folder in folders]


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf8"))


@contextlib.contextmanager
def reference_prng():
    """The reference ran on jax 0.4.13, whose threefry was not "partitionable"."""
    previous = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    try:
        yield
    finally:
        jax.config.update("jax_threefry_partitionable", previous)


class CompilationCounter:
    """Counts XLA compilations (any jitted function) while active."""

    def __init__(self):
        self.count = 0
        self._active = False
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, name, duration, **kwargs):
        if self._active and name == "/jax/core/compile/backend_compile_duration":
            self.count += 1

    @contextlib.contextmanager
    def __call__(self):
        self.count, self._active = 0, True
        try:
            yield self
        finally:
            self._active = False


_COUNTER = None


@pytest.fixture
def count_compilations():
    global _COUNTER
    if _COUNTER is None:
        _COUNTER = CompilationCounter()
    return _COUNTER
