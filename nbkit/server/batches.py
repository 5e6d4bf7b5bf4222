"""The seam between the job queue and a device: what runs one packed batch.

The worker (jobs.py) decides which images go together; a `BatchRunner` makes them and yields the
Pipeline's events (`Progress` while tokens are drawn, `Batch` with the finished images). Today one
runner wraps the one in-process Pipeline; a runner that forwards the same call to one of several
replicas lets several batches be in flight at once without the queue changing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from nbkit.generation.pipeline import Event, Pipeline
from nbkit.generation.request import ImageTask
from nbkit.generation.sampling import SamplingSettings


class BatchRunner(Protocol):
    """Makes one packed batch of images. `name` goes in every saved image's record; `defaults` is the
    model config whose temperature/top_k/top_p unset settings fall back to."""

    name: str
    max_batch: int
    image_length: int
    codebook_size: int
    defaults: Any

    def run(self, tasks: Sequence[ImageTask], settings: SamplingSettings,
            progress_every: int | None) -> Iterator[Event]: ...


class PipelineRunner:
    """A BatchRunner on one Pipeline, which only the calling thread (the worker) uses."""

    def __init__(self, pipe: Pipeline):
        self.pipe = pipe
        self.name, self.max_batch = pipe.name, pipe.max_batch
        self.image_length = pipe.model.config.image_length
        self.codebook_size = pipe.vqgan.config.n_embed
        self.defaults = pipe.model.config

    def run(self, tasks: Sequence[ImageTask], settings: SamplingSettings,
            progress_every: int | None) -> Iterator[Event]:
        return self.pipe.stream_tasks(tasks, settings, progress_every)
