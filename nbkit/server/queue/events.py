"""What the queue tells its clients, as data: a job's status, the events its listeners get, and why
work was refused. protocol.py presents them as JSON; nothing here builds JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from nbkit.generation.progress import describe
from nbkit.server.folders import SavedImage

FINAL_STATES = ("done", "failed", "cancelled")

Listener = Callable[[str, Any], None]    # (event kind, payload); called on a worker thread: post it on


class QueueFull(Exception):
    """The queue holds `max_queue` unfinished jobs and reranks: come back in `retry_after` seconds."""

    def __init__(self, retry_after: int, max_queue: int):
        super().__init__(f"The queue is full ({max_queue} unfinished jobs and reranks, --max-queue): "
                         f"try again in about {retry_after} s.")
        self.retry_after = retry_after


class Stopping(Exception):
    """The server is stopping and takes no new work."""


class Busy(Exception):
    """The same thing (a rerank of one run) is already being done."""


@dataclasses.dataclass(frozen=True)
class JobStatus:
    id: str
    state: str
    position: int                  # 0 while its images are being made (or it has ended); 1: next
    tokens_done: int
    tokens_total: int
    images_done: int
    images_total: int
    already_saved: int
    seed: int | None
    run: str
    error: str | None
    batches: tuple[int, ...]
    images: tuple[SavedImage, ...]
    clients: int                   # requests still wanting this job (identical requests share it)
    kind: str = "generate"         # or "upscale": one saved image made larger (work.UpscaleJob)
    source: str | None = None      # an upscale job's image (its file name in `run`)
    tiles_done: int = 0            # an upscale job's windows done, of tiles_total
    tiles_total: int = 0


@dataclasses.dataclass(frozen=True)
class Queued:
    position: int


@dataclasses.dataclass(frozen=True)
class Upscaling:
    """An upscale job's windows (tiles) done so far (progress event)."""

    tiles_done: int
    tiles_total: int


@dataclasses.dataclass(frozen=True)
class Preview:
    prompt_index: int
    image_index: int
    pixels: np.ndarray = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class Forming:
    """A batch with the job's images is being drawn (progress event)."""

    tokens_done: int
    tokens_total: int
    images_done: int
    images_total: int
    previews: tuple[Preview, ...] = ()
    # the one progress vocabulary (nbkit.generation.progress): what the page shows while it waits
    stage: str = "compiling"               # compiling, drawing, decoding or saving
    label: str = ""                        # e.g. "drawing · 1 of 4 images · … · about 9 s left (…)"
    seconds_left: float | None = None      # for the batch running now, decoding included once timed
    cut: tuple[str, ...] = ()              # this job's prompts longer than the model reads (cut)


def forming(status: JobStatus, stage_now: tuple = ("compiling", None, False), cut: tuple[str, ...] = (),
            previews: tuple[Preview, ...] = ()) -> Forming:
    """A job's progress event, in the one vocabulary: its stage and label say what the wait is for.
    `stage_now`: (stage, seconds left, decode timed) of the batch running its images."""
    stage, left, timed = stage_now
    label = describe(stage, status.images_done, status.images_total, status.tokens_done, status.tokens_total,
                     left, timed)
    return Forming(status.tokens_done, status.tokens_total, status.images_done, status.images_total, previews,
                   stage, label, left, cut)


def one_line(error: BaseException) -> str:
    """An exception as one readable line (its first line, named by its type), for a failed job."""
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {text}"[:300] if text else type(error).__name__
