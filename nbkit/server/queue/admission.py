"""The queue's front door, `JobQueue`: what the HTTP handlers call. Work comes in here (a generation
request, an upscale, a rerank), is refused when the queue is full (429, with when to come back) or the
server is stopping, joins the same work while that still waits or runs (it counts one more client), and
is cancelled only when every client that asked for it has cancelled. Listeners (the SSE streams, the
waiting /generate calls) are callbacks the HTTP side hands in; they are called on a worker thread and
must only post the event on. The workers themselves are in worker.py.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbkit.generation.request import GenerationRequest
from nbkit.output.storage import RunFolder
from nbkit.server.folders import SavedImage, saved_images
from nbkit.server.queue.batching import FIRST_BATCH_GUESS_S, GATHER_S, retry_after_seconds, settings_key
from nbkit.server.queue.events import Busy, JobStatus, Listener, Queued, QueueFull, Stopping
from nbkit.server.queue.state import QueueState, none_ready
from nbkit.server.queue.work import GenerateJob, Job, RerankJob, StepsDone, UpscaleJob
from nbkit.server.queue.worker import Worker
from nbkit.server.replicas.base import ModelFacts, NoReplicaReady, Replica, ReplicaPool


class JobQueue:
    """Work in, images out: a worker thread per replica of `pool` (the in-process replica: one batch in
    flight; N replicas: up to N, as many as are ready). The replicas run one model (`model`, known once
    one is ready; until then new work gets NoReplicaReady).

    `max_queue`: unfinished jobs and reranks (waiting or running) accepted at once; more are refused
    (`QueueFull`). `preview_every`: tokens between progress events, with previews decoded then (when
    the replica's pacing allows) for the jobs someone listens to; None: progress only at batch ends.
    """

    def __init__(self, pool: ReplicaPool, out: str | Path, max_queue: int = 16,
                 preview_every: int | None = 64, log: Callable[[str], None] | None = None,
                 metrics: Any = None):
        self.pool, self.out = pool, Path(out)
        self.max_queue, self.preview_every = max_queue, preview_every
        self._shared = QueueState(pool, self.out, log, metrics)
        self.log, self.metrics = self._shared.log, metrics
        self._threads: list[threading.Thread] = []
        self._workers_left = 0
        self.gather_s = GATHER_S

    def model(self) -> ModelFacts:
        """The replicas' model; NoReplicaReady (503) before any replica has been ready."""
        return self._shared.model()

    @property
    def image_length(self) -> int:
        return self.model().image_length

    @property
    def batches_run(self) -> int:
        return self._shared.batches_run

    @property
    def stopping(self) -> bool:
        return self._shared.stopping

    def start(self) -> None:
        if not self._threads:
            self._workers_left = len(self.pool.replicas)
            self._threads = [threading.Thread(target=self._work, args=(replica,),
                                              name=f"nbkit-{replica.name}", daemon=True)
                             for replica in self.pool.replicas]
            for thread in self._threads:
                thread.start()

    def stop(self) -> None:
        """Takes no new work; the workers finish the batches in flight (saving them), then the work still
        waiting ends (it can be sent again: the run folders keep what was made)."""
        with self._shared.lock:
            self._shared.stopping = True
            self._shared.lock.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        for thread in self._threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in self._threads)

    def submit(self, request: GenerationRequest) -> GenerateJob:
        """Queues `request` (blocking file IO: call it off the event loop). The same request as a job
        still waiting or running joins that job (never one that ended or is being cancelled); one whose
        run folder is complete returns a finished job with the saved images. Raises QueueFull or
        Stopping, or NoReplicaReady when no replica is ready."""
        with self._shared.lock:
            self._check_room_locked()
        model = self.model()
        writer = self._shared.runs.open(model.name, request)
        earlier = saved_images(writer.folder)
        tasks = dataclasses.replace(request, only=writer.missing).tasks() if writer.missing else []
        job = GenerateJob(id=secrets.token_hex(6), run=writer.folder.path.name,
                          key=settings_key(request.settings, model),
                          pending=collections.deque(range(len(tasks))), images=earlier, request=request,
                          writer=writer, tasks=tasks, already_saved=len(earlier))
        admitted = self._admit(job, bool(tasks))
        if admitted is job:
            self.log(f"job {job.id}: {len(tasks)} image(s) to make"
                     + (f", {job.already_saved} already saved" if job.already_saved else "")
                     + f" → {writer.folder.path}")
        return admitted

    def submit_upscale(self, folder: RunFolder, file: str, work: Callable[[StepsDone], SavedImage]) -> Job:
        """Queues an upscale of `folder`'s image `file`: it takes a place in line like a generation job
        (QueueFull, Stopping), runs alone on a worker when its turn comes, streams `Upscaling` progress
        and its saved image, and is cancelled like any job (between windows). `work` gets a progress
        callback and returns the saved image; the upscaler it uses must already be loaded (the worker
        should not wait for downloads). The same upscale while one waits or runs joins it."""
        asked = UpscaleJob(id=secrets.token_hex(6), run=folder.path.name, source=file, work=work)
        job = self._admit(asked)
        if job is asked:
            self.log(f"job {job.id}: upscale {file} in {folder.path}")
        return job

    def submit_rerank(self, run: str, work: Callable[[], Any]) -> concurrent.futures.Future:
        """Queues `work` (scoring `run`'s images) to run on a worker between two batches, before any
        waiting batch; its future holds the answer. It takes a place in the queue (QueueFull), and a run
        has one rerank at a time (Busy)."""
        job = RerankJob(id=secrets.token_hex(6), run=run, work=lambda progress: work())
        return self._admit(job).answer

    def _admit(self, job: Job, waits: bool = True) -> Job:
        """`job` in line (or, `waits` False, finished at once: nothing to make), or the same work already
        there, which it joins."""
        with self._shared.lock:
            for queued in self._shared.waiting:
                if queued.same == job.same and not queued.cancelling:
                    if not job.joins:
                        raise Busy(f"Run {job.run!r} is being {job.kind}ed already: wait for that answer.")
                    queued.clients += 1
                    return queued
            self._check_room_locked()
            self._shared.jobs[job.id] = job
            if waits:
                self._shared.waiting.append(job)
                self._shared.last_arrival = job.arrived
                self._shared.lock.notify_all()
            else:
                job.state = "done"
                self._shared.forget_old_locked()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._shared.lock:
            return self._shared.jobs.get(job_id)

    def status(self, job: Job) -> JobStatus:
        with self._shared.lock:
            return self._shared.status_locked(job)

    def listen(self, job: Job, listener: Listener) -> list[tuple[str, Any]]:
        """Adds `listener` to the job's events and returns what it missed so far, as events: its place in
        the queue or its progress, the images already saved, and its end if it has ended."""
        with self._shared.lock:
            status = self._shared.status_locked(job)
            events: list[tuple[str, Any]] = []
            if job.state == "queued":
                events.append(("queued", Queued(status.position)))
            elif job.state == "running":
                events.append(("progress", job.now(status)))
            events += [("image", image) for image in job.images]
            if job.finished:
                events.append((job.state, status))
            else:
                job.listeners.append(listener)
            return events

    def unlisten(self, job: Job, listener: Listener) -> None:
        with self._shared.lock:
            if listener in job.listeners:
                job.listeners.remove(listener)

    def cancel(self, job: Job) -> JobStatus:
        """One client gives up the job. When no other client still wants it, its images that have not
        started are dropped; those in the batch now running are still made and saved, and the job ends
        as cancelled when that batch does."""
        with self._shared.lock:
            if not job.finished and not job.cancelling:
                job.clients -= 1
                if job.clients == 0:
                    job.pending.clear()
                    if job.in_flight:
                        job.cancelling = True
                    else:
                        self._shared.finish_locked(job, "cancelled")
            status = self._shared.status_locked(job)
        if job.finished:
            self._shared.close_run(job)
        return status

    def info(self) -> dict:
        shared = self._shared
        with shared.lock:
            return {"jobs_waiting": sum(not job.first for job in shared.waiting),
                    "images_waiting": sum(job.images_left for job in shared.waiting),
                    "reranks_waiting": sum(job.first for job in shared.waiting),
                    "batches_run": shared.batches_run, "images_made": shared.images_made,
                    "batches_in_flight": shared.in_flight,
                    "seconds_per_batch": None if shared.seconds_per_batch is None
                    else round(shared.seconds_per_batch, 3)}

    def _check_room_locked(self) -> None:
        shared = self._shared
        if shared.stopping:
            raise Stopping("The server is stopping: it takes no new work.")
        if not self.pool.ready():
            raise NoReplicaReady(none_ready(self.pool))
        if len(shared.waiting) >= self.max_queue:
            oldest = next((job for job in shared.waiting if not job.first), None)
            ahead = oldest.images_left if oldest else 0
            seconds = FIRST_BATCH_GUESS_S if shared.seconds_per_batch is None else shared.seconds_per_batch
            # N replicas make N batches in the time of one
            seconds /= max(1, len(self.pool.ready()))
            raise QueueFull(retry_after_seconds(ahead, self.model().max_batch, seconds), self.max_queue)

    def _work(self, replica: Replica) -> None:
        Worker(self._shared, replica, self.preview_every, self.gather_s).run()
        with self._shared.lock:
            self._workers_left -= 1
            last = self._workers_left == 0
        if last:                          # the others' batches in flight are finished and saved by now
            self._stopped()

    def _stopped(self) -> None:
        with self._shared.lock:
            ended = list(self._shared.waiting)
            for job in ended:
                self._shared.finish_locked(job, "cancelled", "The server stopped before these images were "
                                                             "made: send the same request again to make "
                                                             "the rest.")
        for job in ended:
            self._shared.close_run(job)
