"""The default: batches run in this process, on its Pipeline (no Ray anywhere on this path)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from nbkit.generation.events import Event
from nbkit.generation.pipeline import Pipeline
from nbkit.generation.request import ImageTask
from nbkit.generation.sampling import SamplingSettings
from nbkit.server.replicas.base import READY, ModelFacts, Replica, ReplicaPool
from nbkit.server.replicas.previews import paced


def device_words(pipe: Pipeline) -> str:
    """The devices a pipeline runs on, in words: "cpu ×1", "gpu NVIDIA H200 ×8"."""
    devices = list(pipe.mesh.devices.flat)
    first = devices[0]
    kind = getattr(first, "device_kind", "") or ""
    label = first.platform if kind.lower() in ("", "cpu", first.platform) else f"{first.platform} {kind}"
    return f"{label} ×{len(devices)}"


class InProcessReplica(Replica):
    """The Pipeline of this process as a replica: its events pass through, paced (previews.paced: still
    decoded only when the front reads them)."""

    def __init__(self, pipe: Pipeline, name: str = "local"):
        super().__init__(name)
        self.pipe = pipe
        self.state, self.device, self.pid = READY, device_words(pipe), os.getpid()
        self.model = ModelFacts.of_pipeline(pipe)

    def _events(self, tasks: list[ImageTask], settings: SamplingSettings, progress_every: int | None,
                delivered: list[bool]) -> Iterator[Event]:
        return paced(self.pipe.stream_tasks(tasks, settings, progress_every))


class LocalPool(ReplicaPool):
    """A pool of the one in-process replica, so the front dispatches the same way with or without Ray."""

    def __init__(self, pipe: Pipeline, name: str = "local"):
        super().__init__([InProcessReplica(pipe, name)])
