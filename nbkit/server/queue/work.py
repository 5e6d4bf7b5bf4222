"""The kinds of work the queue holds, one class each, all `Job`s: a generation job (the images its run
folder lacks, made in packed batches), an upscale (one saved image made larger) and a rerank (a run's
images scored by CLIP). Every kind takes a place in the one line, is admitted, joined, cancelled and
listened to the same way (admission.py) and is run by the same worker (worker.py): a generation job's
images in batches, the others by themselves (`SoloJob`: a function given a progress callback).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, ClassVar

from nbkit.generation.request import GenerationRequest, ImageTask
from nbkit.output.runs import RunWriter
from nbkit.server.folders import SavedImage
from nbkit.server.queue.events import FINAL_STATES, JobStatus, Listener, Stopping, Upscaling, forming

SOLO_KEY = ("solo",)             # the pack key of solo work: never equal to a settings_key


@dataclasses.dataclass(eq=False, kw_only=True)
class Job:
    """What every kind of queued work has: its place in line, its clients and listeners, its state."""

    kind: ClassVar[str]
    first: ClassVar[bool] = False          # taken before any waiting batch (and not counted as a place)

    id: str
    run: str                               # the run folder's name
    key: Hashable                          # which jobs it may share a batch with (batching.settings_key)
    pending: collections.deque             # what has not started: task indexes, oldest first
    images: list[SavedImage] = dataclasses.field(default_factory=list)   # saved so far
    arrived: float = dataclasses.field(default_factory=time.monotonic)
    state: str = "queued"
    clients: int = 1                       # requests that want it and have not cancelled
    in_flight: int = 0                     # its rows (or its one run) on a worker now
    error: str | None = None
    cancelling: bool = False               # cancelled while a batch with its images runs
    alone: bool = False                    # never packed with another job
    listeners: list[Listener] = dataclasses.field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def same(self) -> Hashable:
        """The same work asked for again has this same value: it joins this job (`joins`) or is Busy."""
        raise NotImplementedError

    joins: ClassVar[bool] = True

    @property
    def images_left(self) -> int:
        """Images still to make (for /api/info and a 429's estimate)."""
        return len(self.pending) + self.in_flight

    def status(self, position: int, image_length: int) -> JobStatus:
        raise NotImplementedError

    def now(self, status: JobStatus) -> Any:
        """Its progress event now, for a listener that arrives while it runs."""
        raise NotImplementedError

    def ended(self) -> None:
        """Called once it is finished (under the queue's lock)."""


@dataclasses.dataclass(eq=False, kw_only=True)
class GenerateJob(Job):
    """One request (and every identical request sent while it waits or runs): the images its run
    folder lacked, made in the queue's order and saved by its run writer."""

    kind: ClassVar[str] = "generate"

    request: GenerationRequest
    writer: RunWriter                      # its run folder and what it lacked
    tasks: list[ImageTask]                 # the images this job makes (those its folder lacked)
    already_saved: int = 0                 # images its folder had (a repeated request), first in `images`
    position_now: int = 0                  # tokens drawn so far in each row of the batch running
    stage_now: tuple = ("compiling", None, False)   # (stage, seconds left, decode timed) of that batch
    cut: tuple[str, ...] = ()              # its prompts that the model cut (told to its listeners)
    previewed: bool = False                # its first preview was sent (for the metrics)
    batches: list[int] = dataclasses.field(default_factory=list)   # the batches that made its images
    saving: threading.Lock = dataclasses.field(default_factory=threading.Lock)  # writer: one thread at once

    @property
    def same(self) -> Hashable:
        return ("generate", self.writer.key)

    @property
    def images_total(self) -> int:
        return self.already_saved + len(self.tasks)

    def prompts(self) -> set[str]:
        negative = self.request.negative_prompt
        return {*self.request.prompts, *((negative,) if isinstance(negative, str) else negative)}

    def status(self, position: int, image_length: int) -> JobStatus:
        made = len(self.images)
        tokens_done = made * image_length + self.in_flight * self.position_now
        return JobStatus(self.id, self.state, position, tokens_done, self.images_total * image_length,
                         made, self.images_total, self.already_saved, self.request.seed, self.run,
                         self.error, tuple(sorted(set(self.batches))), tuple(self.images), self.clients)

    def now(self, status: JobStatus) -> Any:
        return forming(status, self.stage_now, self.cut)


StepsDone = Callable[[int, int], None]             # (steps done, steps in all), from solo work


@dataclasses.dataclass(eq=False, kw_only=True)
class SoloJob(Job):
    """Work that runs by itself on a worker, between batches: `work(progress)` returns its result."""

    alone: bool = True
    key: Hashable = SOLO_KEY
    pending: collections.deque = dataclasses.field(default_factory=lambda: collections.deque([0]))
    work: Callable[[StepsDone], Any]
    steps: tuple[int, int] = (0, 0)        # its steps (an upscale's windows) done and in all
    source: str | None = None

    def status(self, position: int, image_length: int) -> JobStatus:
        return JobStatus(self.id, self.state, position, 0, 0, len(self.images), 1, 0, None, self.run,
                         self.error, (), tuple(self.images), self.clients, self.kind, self.source,
                         *self.steps)

    def now(self, status: JobStatus) -> Any:
        return Upscaling(*self.steps)

    def begin(self) -> bool:
        """Whether to run it now (False: its one client went away first)."""
        return True

    def delivered(self, result: Any) -> list[SavedImage]:
        """The images its result adds to the run (told to its listeners)."""
        return []

    def failed(self, error: Exception) -> None:
        """Its work raised `error` (the job fails with it as one line)."""


@dataclasses.dataclass(eq=False, kw_only=True)
class UpscaleJob(SoloJob):
    """`source`, a saved image of `run`, made larger by the server's upscaler (`work` returns the saved
    copy); cancelled between windows."""

    kind: ClassVar[str] = "upscale"

    @property
    def same(self) -> Hashable:
        return ("upscale", self.run, self.source)

    def delivered(self, result: Any) -> list[SavedImage]:
        return [result]


@dataclasses.dataclass(eq=False, kw_only=True)
class RerankJob(SoloJob):
    """A run's images scored by CLIP (`work` returns the ranking, handed to `answer`). It goes before
    any waiting batch (a person waits on its answer and it is short), and a run has one at a time."""

    kind: ClassVar[str] = "rerank"
    first: ClassVar[bool] = True
    joins: ClassVar[bool] = False

    answer: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)

    @property
    def same(self) -> Hashable:
        return ("rerank", self.run)

    @property
    def images_left(self) -> int:
        return 0

    def begin(self) -> bool:
        return self.answer.set_running_or_notify_cancel()

    def delivered(self, result: Any) -> list[SavedImage]:
        self.answer.set_result(result)
        return []

    def failed(self, error: Exception) -> None:
        self.answer.set_exception(error)

    def ended(self) -> None:
        if not self.answer.done():
            if self.answer.running() or self.answer.set_running_or_notify_cancel():
                self.answer.set_exception(Stopping("The server stopped before this was done."))
