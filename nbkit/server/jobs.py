"""The one queue between the HTTP handlers and the worker threads that run batches on the replicas.

Generation is seconds to minutes of blocking device calls, so it runs in worker threads, never on the
event loop that answers clients. Jobs from every client wait in one FIFO queue, and the worker packs the
images of consecutive jobs whose sampling settings agree into one batch (`pack`): four people asking for
two images each run as one batch of eight when `max_batch` allows. Every image depends only on its own
task, so packing never changes an image. What runs a batch is a `Replica` (replicas/): the Pipeline of
this process by default, or Ray Serve replicas, each with a worker thread here that takes the next batch
as soon as its replica is ready and free. A replica whose process dies mid-batch gives back the images
it had not delivered: they go back to the head of the queue, for another (or the restarted) replica.

Each image is saved (PNG, then its manifest line) as soon as its batch ends, before anyone is told, so a
client that goes away, or a server that is killed, loses at most the batch in flight; the same request
again reopens its run folder and makes only what it lacks. Runs are written by the one run writer
(`output.runs.RunWriter`) that the CLI and the notebook form use too: each image as it is made, and the
grids when a job is done. Run keys are indexed in memory (one scan of the output folder, at the first
request), so a request on a slow disk such as Drive does not rescan every run.json.

The same request while its job is still waiting or running joins that job (it counts one more client);
a job is cancelled only when every client that asked for it has cancelled. Listeners (the SSE streams,
the waiting /generate calls) are callbacks the HTTP side hands in; they are called on this thread and
must only post the event on.

Nothing here builds JSON: events and statuses are the dataclasses below, which protocol.py presents.

Over 350 lines: admission, the worker loop, saving, requeue and chores are still one class; splitting
them (client events, batching rules, worker, admission) is the open part of issue 23.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import secrets
import sys
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nbkit.generation.pipeline import Batch, GeneratedImage, Progress
from nbkit.generation.progress import describe
from nbkit.generation.request import GenerationRequest, ImageTask
from nbkit.generation.sampling import SamplingSettings
from nbkit.output.runs import RunWriter, request_run_key
from nbkit.output.storage import RunFolder
from nbkit.server.folders import SavedImage, for_clients, saved_images
from nbkit.server.replicas.base import ModelFacts, NoReplicaReady, Replica, ReplicaDied, ReplicaPool

FINAL_STATES = ("done", "failed", "cancelled")
KEPT_FINISHED_JOBS = 1000        # finished jobs remembered for status requests; older ones are forgotten
FIRST_BATCH_GUESS_S = 10.0       # what a batch is assumed to take before one has been timed
GATHER_S = 0.05                  # an idle worker waits this long after a job arrives, for others to pack
GATHER_MAX_S = 0.5               # but never longer than this after the oldest waiting job arrived
PREVIEW_SHARE = 0.25             # after a batch's first preview, previews take at most this share of it
NOT_READY_WAIT_S = 0.5           # a worker whose replica is not ready looks again this often

Listener = Callable[[str, Any], None]


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


class _Cancelled(Exception):
    """Raised from an upscale job's progress callback when every client has cancelled it."""


# ---- what clients are told, as data


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
    kind: str = "generate"         # or "upscale": one saved image made larger (see `submit_upscale`)
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


UpscaleWork = Callable[[Callable[[int, int], None]], SavedImage]   # progress(done, total) → the saved image
UPSCALE_KEY = ("upscale",)       # the pack key of upscale jobs: never equal to a settings_key


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


# ---- what is pure: packing, estimates, one-line errors


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


def preview_due(previews_so_far: int, decoding_s: float, batch_s: float,
                share: float = PREVIEW_SHARE) -> bool:
    """Whether to decode a preview now: a batch's first always (it shows the picture forming); later ones
    while decoding them has taken at most `share` of the batch's time. On an accelerator decoding is quick
    and every preview is shown; on a CPU, where one decode can cost as much as 100 tokens, fewer are."""
    return previews_so_far == 0 or decoding_s <= share * batch_s


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


def one_line(error: BaseException) -> str:
    """An exception as one readable line (its first line, named by its type), for a failed job."""
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {text}"[:300] if text else type(error).__name__


# ---- jobs


@dataclasses.dataclass(eq=False)
class Job:
    """One request (and every identical request sent while it waits or runs): the images its run
    folder lacked, made in the queue's order."""

    id: str
    request: GenerationRequest | None      # None for an upscale job (see `upscale`)
    writer: RunWriter | None               # its run folder and what it lacked (None: an upscale job's)
    run: str                               # the run folder's name
    tasks: list[ImageTask]                 # the images this job makes (those its folder lacked)
    key: tuple                             # settings_key: which jobs it may share a batch with
    images: list[SavedImage]               # saved so far, earlier ones (a repeated request) first
    already_saved: int
    pending: collections.deque = dataclasses.field(default_factory=collections.deque)  # task indexes
    arrived: float = dataclasses.field(default_factory=time.monotonic)
    state: str = "queued"
    clients: int = 1                       # requests that want it and have not cancelled
    in_flight: int = 0                     # its rows in the batch now running
    position_now: int = 0                  # tokens drawn so far in each row of that batch
    stage_now: tuple = ("compiling", None, False)   # (stage, seconds left, decode timed) of that batch
    cut: tuple[str, ...] = ()              # its prompts that the model cut (told to its listeners)
    error: str | None = None
    cancelling: bool = False               # cancelled while a batch with its images runs
    alone: bool = False                    # a packed batch with it failed: it runs by itself now
    previewed: bool = False                # its first preview was sent (for the metrics)
    batches: list[int] = dataclasses.field(default_factory=list)   # the batches that made its images
    listeners: list[Listener] = dataclasses.field(default_factory=list)
    upscale: UpscaleWork | None = None     # an upscale job: what to run on the worker instead of a batch
    source: str | None = None              # its image's file name in `folder`
    tiles: tuple[int, int] = (0, 0)        # its windows done and in all

    saving: threading.Lock = dataclasses.field(default_factory=threading.Lock)  # writer: one thread at once

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def images_total(self) -> int:
        return self.already_saved + len(self.tasks)


@dataclasses.dataclass
class _Chore:
    """Work for the device between batches (a rerank), run on the worker thread."""

    function: Callable[[], Any]
    future: concurrent.futures.Future
    run: str


class JobQueue:
    """Jobs in, images out: a worker thread per replica of `pool` makes the jobs' images, batch by batch
    (the in-process replica: one batch in flight; N replicas: up to N, as many as are ready). The replicas
    run one model (`model`, known once one is ready; until then new jobs get NoReplicaReady).

    `max_queue`: unfinished jobs and reranks (waiting or running) accepted at once; more are refused
    (`QueueFull`). `preview_every`: tokens between progress events, with previews decoded then (when
    `preview_due`) for the jobs someone listens to; None: progress only at batch boundaries.
    """

    def __init__(self, pool: ReplicaPool, out: str | Path, max_queue: int = 16,
                 preview_every: int | None = 64, log: Callable[[str], None] | None = None,
                 metrics: Any = None):
        self.pool, self.out = pool, Path(out)
        self.max_queue, self.preview_every = max_queue, preview_every
        self.log = log or _to_stderr
        self.metrics = metrics                   # a ServerMetrics, or None
        self._lock = threading.Condition()
        self._opening = threading.Lock()         # a submit looks for its run folder, then makes one
        self._runs: dict[str, RunFolder] | None = None   # run key → folder under `out` (RunFolder.index)
        self._jobs: dict[str, Job] = {}
        self._waiting: list[Job] = []            # unfinished jobs, oldest first
        self._chores: collections.deque[_Chore] = collections.deque()
        self._reranking: set[str] = set()        # runs with a rerank waiting or running
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._workers_left = 0
        self._in_flight = 0                      # batches running now
        self._seconds_per_batch: float | None = None    # None until a batch that did not compile ends
        self._last_arrival = 0.0
        self.gather_s = GATHER_S
        self.batches_run = 0
        self.images_made = 0

    # ---- the HTTP side

    def model(self) -> ModelFacts:
        """The replicas' model; NoReplicaReady (503) before any replica has been ready."""
        model = self.pool.model
        if model is None:
            raise NoReplicaReady(_none_ready(self.pool))
        return model

    @property
    def image_length(self) -> int:
        return self.model().image_length

    def start(self) -> None:
        if not self._threads:
            self._workers_left = len(self.pool.replicas)
            self._threads = [threading.Thread(target=self._work, args=(replica,),
                                              name=f"nbkit-{replica.name}", daemon=True)
                             for replica in self.pool.replicas]
            for thread in self._threads:
                thread.start()

    def stop(self) -> None:
        """Takes no new work; the worker finishes the batch in flight (saving it), then ends the jobs
        still waiting (they can be sent again: their run folders keep what was made)."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        for thread in self._threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in self._threads)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def submit(self, request: GenerationRequest) -> Job:
        """Queues `request` (blocking file IO: call it off the event loop). The same request as a job
        still waiting or running joins that job (never one that ended or is being cancelled); one whose
        run folder is complete returns a finished job with the saved images. Raises QueueFull or
        Stopping, or NoReplicaReady when no replica is ready."""
        with self._lock:
            self._check_room()
        model = self.model()
        with self._opening:                      # only submits wait here, never status or event requests
            if self._runs is None:
                self._runs = RunFolder.index(self.out)
            key = request_run_key(model.name, request)
            if key in self._runs and not self._runs[key].path.is_dir():
                del self._runs[key]             # removed from the disk while the server ran: a new one
            writer = RunWriter.open(model.name, request, self.out, self._runs)
            folder = self._runs[writer.key] = writer.make_folder()   # its name is in every status
        earlier = saved_images(folder)
        with self._lock:
            for job in self._waiting:
                if job.writer is not None and job.writer.key == writer.key and not job.cancelling:
                    job.clients += 1
                    return job
            self._check_room()
            tasks = dataclasses.replace(request, only=writer.missing).tasks() if writer.missing else []
            job = Job(secrets.token_hex(6), request, writer, folder.path.name, tasks,
                      settings_key(request.settings, model), earlier, len(earlier),
                      pending=collections.deque(range(len(tasks))))
            self._jobs[job.id] = job
            if tasks:
                self._waiting.append(job)
                self._last_arrival = job.arrived
                self._lock.notify_all()
            else:
                job.state = "done"
                self._forget_old()
        self.log(f"job {job.id}: {len(tasks)} image(s) to make"
                 + (f", {job.already_saved} already saved" if job.already_saved else "")
                 + f" → {folder.path}")
        return job

    def submit_upscale(self, folder: RunFolder, file: str, work: UpscaleWork) -> Job:
        """Queues an upscale of `folder`'s image `file` as a job of its own: it takes a place in the queue
        like a generation job (QueueFull, Stopping), runs alone on a worker when its turn comes, streams
        `Upscaling` progress and its saved image, and is cancelled like any job (between windows). `work`
        gets a progress callback and returns the saved image; the upscaler it uses must already be loaded
        (the worker should not wait for downloads). The same upscale while one waits or runs joins it."""
        with self._lock:
            for job in self._waiting:
                if job.upscale is not None and (job.run, job.source) == (folder.path.name, file) \
                        and not job.cancelling:
                    job.clients += 1
                    return job
            self._check_room()
            job = Job(secrets.token_hex(6), None, None, folder.path.name, [None], UPSCALE_KEY, [], 0,
                      pending=collections.deque([0]), alone=True, upscale=work, source=file)
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._last_arrival = job.arrived
            self._lock.notify_all()
        self.log(f"job {job.id}: upscale {file} in {folder.path}")
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def status(self, job: Job) -> JobStatus:
        with self._lock:
            return self._status(job)

    def listen(self, job: Job, listener: Listener) -> list[tuple[str, Any]]:
        """Adds `listener` to the job's events and returns what it missed so far, as events: its place in
        the queue or its progress, the images already saved, and its end if it has ended."""
        with self._lock:
            status = self._status(job)
            events: list[tuple[str, Any]] = []
            if job.state == "queued":
                events.append(("queued", Queued(status.position)))
            elif job.state == "running":
                now = Upscaling(*job.tiles) if job.upscale else _forming(status, (), job)
                events.append(("progress", now))
            events += [("image", image) for image in job.images]
            if job.finished:
                events.append((job.state, status))
            else:
                job.listeners.append(listener)
            return events

    def unlisten(self, job: Job, listener: Listener) -> None:
        with self._lock:
            if listener in job.listeners:
                job.listeners.remove(listener)

    def cancel(self, job: Job) -> JobStatus:
        """One client gives up the job. When no other client still wants it, its images that have not
        started are dropped; those in the batch now running are still made and saved, and the job ends
        as cancelled when that batch does."""
        with self._lock:
            if not job.finished and not job.cancelling:
                job.clients -= 1
                if job.clients == 0:
                    job.pending.clear()
                    if job.in_flight:
                        job.cancelling = True
                    else:
                        self._finish(job, "cancelled")
            status = self._status(job)
        if job.finished:
            self._close_run(job)
        return status

    def run_on_worker(self, chore: Callable[[], Any], run: str) -> concurrent.futures.Future:
        """Runs `chore` (a rerank of `run`) on the worker thread between two batches, before any waiting
        batch. It takes a place in the queue like a job (QueueFull when there is none), and a run has
        one at a time (Busy)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if run in self._reranking:
                raise Busy(f"Run {run!r} is being reranked already: wait for that answer.")
            self._check_room()
            self._reranking.add(run)
            self._chores.append(_Chore(chore, future, run))
            self._lock.notify_all()
        return future

    def info(self) -> dict:
        with self._lock:
            return {"jobs_waiting": len(self._waiting), "images_waiting": self._images_waiting(),
                    "reranks_waiting": len(self._reranking), "batches_run": self.batches_run,
                    "images_made": self.images_made, "batches_in_flight": self._in_flight,
                    "seconds_per_batch": None if self._seconds_per_batch is None
                    else round(self._seconds_per_batch, 3)}

    # ---- under the lock

    def _check_room(self) -> None:
        if self._stopping:
            raise Stopping("The server is stopping: it takes no new work.")
        if not self.pool.ready():
            raise NoReplicaReady(_none_ready(self.pool))
        if len(self._waiting) + len(self._reranking) >= self.max_queue:
            oldest = self._waiting[0] if self._waiting else None
            ahead = len(oldest.pending) + oldest.in_flight if oldest else 0
            seconds = FIRST_BATCH_GUESS_S if self._seconds_per_batch is None else self._seconds_per_batch
            # N replicas make N batches in the time of one
            seconds /= max(1, len(self.pool.ready()))
            raise QueueFull(retry_after_seconds(ahead, self.model().max_batch, seconds), self.max_queue)

    def _images_waiting(self) -> int:
        return sum(len(job.pending) + job.in_flight for job in self._waiting)

    def _position(self, job: Job) -> int:
        """0 while its images are being made; else its place in line (1: next)."""
        if job.state != "queued":
            return 0
        return 1 + self._waiting.index(job) if job in self._waiting else 0

    def _status(self, job: Job) -> JobStatus:
        made = len(job.images)
        if job.upscale is not None:
            return JobStatus(job.id, job.state, self._position(job), 0, 0, made, 1, 0, None,
                             job.run, job.error, (), tuple(job.images), job.clients, "upscale",
                             job.source, *job.tiles)
        return JobStatus(job.id, job.state, self._position(job),
                         made * self.image_length + job.in_flight * job.position_now,
                         job.images_total * self.image_length, made, job.images_total, job.already_saved,
                         job.request.seed, job.run, job.error, tuple(sorted(set(job.batches))),
                         tuple(job.images), job.clients)

    def _publish(self, job: Job, kind: str, payload: Any) -> None:
        for listener in list(job.listeners):
            try:
                listener(kind, payload)
            except Exception as error:       # a listener's failure must not stop the worker
                self.log(f"job {job.id}: a listener failed ({one_line(error)}); dropping it")
                job.listeners.remove(listener)

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        shown = None if error is None else for_clients(error, self.out)
        if shown != error:
            self.log(f"job {job.id}: {error}")          # the whole message stays in the server's log
        job.state, job.error = state, shown
        job.pending.clear()
        if job in self._waiting:
            self._waiting.remove(job)
        self._publish(job, state, self._status(job))
        job.listeners.clear()
        self._forget_old()
        self._lock.notify_all()

    def _forget_old(self) -> None:
        finished = [job for job in self._jobs.values() if job.finished]
        for job in finished[:max(0, len(finished) - KEPT_FINISHED_JOBS)]:
            del self._jobs[job.id]

    def _gather_delay(self) -> float:
        heads = [(job.key, len(job.pending), job.alone) for job in self._waiting]
        max_batch = self.model().max_batch
        full = sum(pack(heads, max_batch)) >= max_batch
        oldest = min(job.arrived for job in self._waiting if job.pending)
        return gather_delay(time.monotonic(), self._last_arrival, oldest, full, self.gather_s)

    def _next_batch(self) -> list[tuple[Job, int]]:
        heads = [(job.key, len(job.pending), job.alone) for job in self._waiting]
        chosen = []
        for job, count in zip(self._waiting, pack(heads, self.model().max_batch), strict=False):
            for _ in range(count):
                chosen.append((job, job.pending.popleft()))
            if count:
                job.in_flight += count
                job.position_now = 0
                job.state = "running"
        return chosen

    # ---- the worker thread

    def _work(self, replica: Replica) -> None:
        while True:
            with self._lock:
                while not (self._stopping or self._chores or any(job.pending for job in self._waiting)):
                    self._lock.wait()
                if self._stopping:
                    break
                if not replica.ready or replica.busy:     # starting, restarting, failed: look again soon
                    self._lock.wait(NOT_READY_WAIT_S)
                    continue
                if not self._chores:
                    delay = self._gather_delay()
                    if delay > 0:
                        self._lock.wait(delay)
                        continue
                chore = self._chores.popleft() if self._chores else None
                chosen = [] if chore else self._next_batch()
                if chosen:
                    self.batches_run += 1
                    self._in_flight += 1
                    batch_id = self.batches_run
                    for queued in self._waiting:
                        if queued.state == "queued":
                            self._publish(queued, "queued", Queued(self._position(queued)))
            if chore:
                self._run_chore(chore)
            elif chosen:
                try:
                    if chosen[0][0].upscale is not None:
                        self._run_upscale(chosen[0][0])
                    else:
                        self._run_batch(replica, batch_id, chosen)
                finally:
                    with self._lock:
                        self._in_flight -= 1
        with self._lock:
            self._workers_left -= 1
            last = self._workers_left == 0
        if last:                          # the others' batches in flight are finished and saved by now
            self._stopped()

    def _run_chore(self, chore: _Chore) -> None:
        try:
            if chore.future.set_running_or_notify_cancel():
                try:
                    chore.future.set_result(chore.function())
                except BaseException as error:
                    chore.future.set_exception(error)
        finally:
            with self._lock:
                self._reranking.discard(chore.run)

    def _run_upscale(self, job: Job) -> None:
        """An upscale job, on this worker: its windows run in batches of their own (the upscaler's), with
        a progress event after each; a cancel stops it at the next one, before anything is saved."""
        def progress(done: int, total: int) -> None:
            with self._lock:
                job.tiles = (done, total)
                if job.cancelling:
                    raise _Cancelled()
                self._publish(job, "progress", Upscaling(done, total))

        saved, state, error = None, "done", None
        try:
            saved = job.upscale(progress)
        except _Cancelled:
            state = "cancelled"
        except Exception as failure:
            state, error = "failed", one_line(failure)
            self.log(f"job {job.id}: upscale failed ({error})")
        with self._lock:
            job.in_flight = 0
            if saved is not None:
                job.images.append(saved)
                self._publish(job, "image", saved)
            if not job.finished:
                self._finish(job, state, error)

    def _stopped(self) -> None:
        with self._lock:
            for chore in self._chores:
                chore.future.set_exception(Stopping("The server stopped before this was done."))
                self._reranking.discard(chore.run)
            self._chores.clear()
            ended = list(self._waiting)
            for job in ended:
                self._finish(job, "cancelled", "The server stopped before these images were made: send the "
                                               "same request again to make the rest.")
        for job in ended:
            self._close_run(job)

    def _run_batch(self, replica: Replica, batch_id: int, chosen: list[tuple[Job, int]]) -> None:
        owners = [job for job, _ in chosen]
        tasks = [job.tasks[index] for job, index in chosen]
        jobs = list(dict.fromkeys(owners))
        # Progress is streamed whether or not anyone listens yet: a page subscribes only after its job was
        # accepted, by when an idle worker has begun the batch. Previews are decoded only for listeners.
        saved = [False] * len(tasks)
        requeued: set[Job] = set()
        began = time.perf_counter()
        previews = {"count": 0, "seconds": 0.0}           # decoded in this batch so far
        compiled = False
        described = ", ".join(f"{owners.count(job)} of job {job.id}" for job in jobs)
        self.log(f"batch {batch_id}: {len(tasks)} image(s) ({described})"
                 + (f" on {replica.name}" if replica.remote else ""))
        try:
            for event in replica.run(tasks, jobs[0].request.settings, self.preview_every):
                if isinstance(event, Progress):
                    compiled = compiled or event.compiling
                    self._progress(event, owners, jobs, previews, began)
                elif isinstance(event, Batch):
                    self._saving(jobs)
                    for slot, image in zip(event.batch, event.images, strict=True):
                        saved[slot] = self._save(owners[slot], image, batch_id, replica)
        except ReplicaDied as died:
            requeued = self._requeue(died, chosen, saved)
        except Exception as error:
            self._batch_failed(error, chosen, saved)
        else:
            elapsed = time.perf_counter() - began
            if self.metrics is not None:
                self.metrics.batch_done(replica.name, elapsed)
            with self._lock:
                self._seconds_per_batch = batch_seconds(self._seconds_per_batch, elapsed, compiled)
        with self._lock:
            for job in jobs:
                unsaved = sum(owner is job and not done for owner, done in zip(owners, saved, strict=True))
                job.in_flight -= unsaved          # (saved ones were counted off as they were saved)
                if job.in_flight == 0:
                    job.position_now = 0
                if job.finished or job.in_flight:
                    continue
                if job in requeued and job.pending:              # its images went back to the queue
                    job.state = "queued"
                if job.cancelling:
                    self._finish(job, "cancelled")
                elif not job.pending:
                    self._finish(job, "done")
        for job in jobs:
            if job.finished:
                self._close_run(job)

    def _close_run(self, job: Job) -> None:
        """After a job's end, outside the lock: a done job's run gets its grids (from the pixels in
        memory); a run folder that got no image at all (the job failed or was cancelled before its
        first) is removed, and forgotten by the index. An upscale job's run is not its own: left as is."""
        if job.writer is None:
            return
        with job.saving:
            try:
                if job.state == "done":
                    job.writer.finish(grid=True)
                elif job.writer.folder is not None and job.writer.folder.remove_if_empty():
                    with self._opening:
                        if self._runs is not None and self._runs.get(job.writer.key) is job.writer.folder:
                            del self._runs[job.writer.key]
            except OSError as error:
                self.log(f"job {job.id}: could not finish its run folder: {one_line(error)}")

    def _progress(self, event: Progress, owners: list[Job], jobs: list[Job], spent: dict,
                  began: float) -> None:
        with self._lock:
            for job in jobs:
                job.position_now = event.position
                job.stage_now = (event.stage, event.seconds_left, event.decode_timed)
                negative = job.request.negative_prompt
                texts = {*job.request.prompts, *((negative,) if isinstance(negative, str) else negative)}
                job.cut = tuple(text for text in event.cut if text in texts)   # not other jobs' prompts
            watched = [job for job in jobs if job.listeners]
        previews: dict[int, list[Preview]] = {}
        now = time.perf_counter()
        if watched and event.tokens is not None and event.position > 0 and \
                preview_due(spent["count"], spent["seconds"], now - began):
            images = event.images                     # decoded here, once for the whole batch
            for slot, image in enumerate(images):
                if owners[slot].listeners:
                    previews.setdefault(id(owners[slot]), []).append(
                        Preview(image.prompt_index, image.image_index, np.asarray(image.pixels)))
            spent["count"] += 1
            spent["seconds"] += time.perf_counter() - now
        with self._lock:
            for job in watched:
                status = self._status(job)
                shown = tuple(previews.get(id(job), ()))
                if shown and not job.previewed:
                    job.previewed = True
                    if self.metrics is not None:
                        self.metrics.first_preview_after(time.monotonic() - job.arrived)
                self._publish(job, "progress", _forming(status, shown, job))

    def _saving(self, jobs: list[Job]) -> None:
        """Tells the listening jobs of a finished batch that its images are being written."""
        with self._lock:
            for job in jobs:
                if job.listeners and not job.finished:
                    job.stage_now = ("saving", None, True)
                    self._publish(job, "progress", _forming(self._status(job), (), job))

    def _save(self, job: Job, image: GeneratedImage, batch_id: int, replica: Replica) -> bool:
        try:
            with job.saving:
                name = job.writer.save(image, replica=replica.name if replica.remote else "").name
        except Exception as error:
            with self._lock:
                if not job.finished:
                    self._finish(job, "failed", f"Could not save an image: {one_line(error)}")
            return False
        saved = SavedImage(job.run, name, image.prompt, image.prompt_index, image.image_index,
                           image.seed, batch_id)
        with self._lock:
            job.images.append(saved)
            job.batches.append(batch_id)
            job.in_flight -= 1
            self.images_made += 1
            self._publish(job, "image", saved)
        if self.metrics is not None:
            self.metrics.image_made(replica.name)
        return True

    def _requeue(self, died: ReplicaDied, chosen: list[tuple[Job, int]], saved: list[bool]) -> set[Job]:
        """A replica's process died mid-batch: the images it did not deliver go back to the head of the
        queue (each to the front of its job's waiting images; the jobs keep their places), for the next
        free replica. Those it delivered are saved already and are not made again."""
        self.log(f"{died}")
        requeued = set()
        with self._lock:
            for slot in reversed(died.unfinished):
                job, index = chosen[slot]
                if not saved[slot] and not job.finished and not job.cancelling:
                    job.pending.appendleft(index)
                    requeued.add(job)
            self._lock.notify_all()
        return requeued

    def _batch_failed(self, error: Exception, chosen: list[tuple[Job, int]], saved: list[bool]) -> None:
        """A batch of several jobs is tried again one job at a time, so that one job's bad input fails
        only that job; a job alone in its batch fails, with the error as one line."""
        message = one_line(error)
        jobs = list(dict.fromkeys(job for job, _ in chosen))
        self.log(f"batch failed ({message}); jobs: {', '.join(job.id for job in jobs)}")
        with self._lock:
            if len(jobs) > 1:
                for (job, index), done in reversed(list(zip(chosen, saved, strict=True))):
                    if not done and not job.finished and not job.cancelling:
                        job.pending.appendleft(index)
                for job in jobs:
                    job.alone = True
                    if job.pending and not job.finished:
                        job.state = "queued"
            else:
                for job in jobs:
                    if not job.finished:
                        self._finish(job, "failed", message)


def _none_ready(pool: ReplicaPool) -> str:
    states = ", ".join(f"{replica.name} {replica.state}" for replica in pool.replicas)
    return (f"No generation replica is ready ({states}): try again shortly; /api/info shows each "
            "replica's state and last error.")


def _to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")        # one write: lines from two threads do not interleave
    sys.stderr.flush()


def _forming(status: JobStatus, previews: tuple[Preview, ...] = (), job: Job | None = None) -> Forming:
    """A job's progress event, in the one vocabulary: its stage and label say what the wait is for."""
    stage, left, timed = job.stage_now if job is not None else ("compiling", None, False)
    label = describe(stage, status.images_done, status.images_total, status.tokens_done, status.tokens_total,
                     left, timed)
    return Forming(status.tokens_done, status.tokens_total, status.images_done, status.images_total, previews,
                   stage, label, left, job.cut if job is not None else ())
