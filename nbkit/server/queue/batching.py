"""The queue's pure rules: which jobs share a batch, how long an idle worker gathers, and the estimates
a 429 and /api/info give. No threads and no state here: the worker calls these with what it sees.

Every image depends only on its own task, so packing never changes an image: four people asking for
two images each run as one batch of eight when `max_batch` allows.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

from nbkit.generation.sampling import SamplingSettings

FIRST_BATCH_GUESS_S = 10.0       # what a batch is assumed to take before one has been timed
GATHER_S = 0.05                  # an idle worker waits this long after a job arrives, for others to pack
GATHER_MAX_S = 0.5               # but never longer than this after the oldest waiting job arrived


def settings_key(settings: SamplingSettings, defaults: Any) -> tuple:
    """The values a batch is sampled with, unset settings resolved to the model's defaults: jobs with
    equal keys draw with exactly the same settings, so they may share a batch."""
    pick = lambda value, default: float(default if value is None else value)
    return (pick(settings.temperature, defaults.temperature), pick(settings.top_k, defaults.top_k),
            pick(settings.top_p, defaults.top_p), float(settings.condition_scale))


def pack(heads: Sequence[tuple[Hashable, int, bool]], max_batch: int) -> list[int]:
    """How many images to take from each job, in queue order, for the next batch.

    `heads`: (settings key, images not yet started, runs alone) per unfinished job, oldest first.
    The oldest job with images left sets the settings; the jobs after it join while their key is equal,
    up to `max_batch` images. The first job that differs ends the batch (first come, first served: no
    job is overtaken), and a job that must run alone (its packed batch failed once) is never packed.
    """
    counts, room, key = [], max_batch, None
    for job_key, waiting, alone in heads:
        if room == 0:
            break
        if waiting == 0:
            counts.append(0)
            continue
        if key is not None and (job_key != key or alone):
            break
        key = job_key
        take = min(waiting, room)
        counts.append(take)
        room -= take
        if alone:
            break
    return counts


def gather_delay(now: float, last_arrival: float, oldest_arrival: float, batch_full: bool,
                 gather_s: float = GATHER_S, gather_max_s: float = GATHER_MAX_S) -> float:
    """How long an idle worker waits before starting a batch that is not full: people who press the
    button at the same moment arrive a few milliseconds apart, and a batch runs for seconds, so a short
    wait lets them share it. Jobs that keep arriving cannot hold the batch back past `gather_max_s`."""
    if batch_full:
        return 0.0
    return max(0.0, min(last_arrival + gather_s, oldest_arrival + gather_max_s) - now)


def retry_after_seconds(images_ahead: int, max_batch: int, seconds_per_batch: float) -> int:
    """A client refused for a full queue should come back when the queue has room: when the oldest
    unfinished job, whose `images_ahead` are still to make, has had its batches; at least a second."""
    batches = max(1, math.ceil(images_ahead / max_batch))
    return max(1, math.ceil(batches * seconds_per_batch))


def batch_seconds(previous: float | None, elapsed: float, compiled: bool) -> float | None:
    """The running estimate of a batch's time: a batch that compiled says nothing about the next ones
    and is left out; the first timed batch sets it, later ones move it by 30 %."""
    if compiled:
        return previous
    return elapsed if previous is None else 0.7 * previous + 0.3 * elapsed
