"""The worker: one thread a replica, taking the next work from the line as soon as its replica is ready
and free. A generation batch packs the images of consecutive jobs whose settings agree (batching.pack),
runs on the replica, streams progress and previews to the jobs' listeners (its events shown through the
one dispatch, generation.stream.show, as every front end does), and saves each image through
its job's run writer (output.runs.RunWriter, the one writer the CLI and the form use too) as soon as
its batch ends, before anyone is told: a client that goes away, or a server that is killed, loses at most
the batch in flight. A replica whose process dies mid-batch gives back the images it had not delivered:
they go back to the head of the line. A packed batch that fails is tried again one job at a time, so one
job's bad input fails only that job. Solo work (an upscale, a rerank) runs by itself between batches.
"""

from __future__ import annotations

import time

import numpy as np

from nbkit.generation.events import Batch, GeneratedImage, Progress
from nbkit.generation.stream import View, show
from nbkit.server.folders import SavedImage
from nbkit.server.queue.batching import GATHER_S, batch_seconds, gather_delay, pack
from nbkit.server.queue.events import Preview, Queued, Upscaling, forming, one_line
from nbkit.server.queue.state import QueueState
from nbkit.server.queue.work import GenerateJob, Job, SoloJob
from nbkit.server.replicas.base import Replica, ReplicaDied

NOT_READY_WAIT_S = 0.5           # a worker whose replica is not ready looks again this often


class _Cancelled(Exception):
    """Raised from solo work's progress callback when every client has cancelled it."""


class Worker:
    """The loop of one replica's thread (`run`); `preview_every`: tokens between progress events."""

    def __init__(self, shared: QueueState, replica: Replica, preview_every: int | None,
                 gather_s: float = GATHER_S):
        self.shared, self.replica = shared, replica
        self.preview_every, self.gather_s = preview_every, gather_s

    def run(self) -> None:
        """Runs work until the queue stops; returns after the work in flight is finished and saved."""
        shared, lock = self.shared, self.shared.lock
        while True:
            with lock:
                while not (shared.stopping or any(job.pending for job in shared.waiting)):
                    lock.wait()
                if shared.stopping:
                    break
                if not self.replica.ready or self.replica.busy:   # starting, restarting, failed: look again
                    lock.wait(NOT_READY_WAIT_S)
                    continue
                first = next((job for job in shared.waiting if job.first and job.pending), None)
                if first is None:
                    delay = self._gather_delay_locked()
                    if delay > 0:
                        lock.wait(delay)
                        continue
                chosen = self._take_locked(first)
                counted = bool(chosen) and not chosen[0][0].first
                if counted:
                    shared.batches_run += 1
                    shared.in_flight += 1
                    batch_id = shared.batches_run
                    for queued in shared.waiting:
                        if queued.state == "queued":
                            shared.publish_locked(queued, "queued", Queued(shared.position_locked(queued)))
            if not chosen:
                continue
            try:
                if isinstance(chosen[0][0], SoloJob):
                    self._run_solo(chosen[0][0])
                else:
                    self._run_batch(batch_id, chosen)
            finally:
                if counted:
                    with lock:
                        shared.in_flight -= 1

    def _gather_delay_locked(self) -> float:
        waiting = self.shared.waiting
        heads = [(job.key, len(job.pending), job.alone) for job in waiting]
        max_batch = self.shared.model().max_batch
        full = sum(pack(heads, max_batch)) >= max_batch
        oldest = min(job.arrived for job in waiting if job.pending)
        return gather_delay(time.monotonic(), self.shared.last_arrival, oldest, full, self.gather_s)

    def _take_locked(self, first: Job | None) -> list[tuple[Job, int]]:
        """The work to run next: `first` (a rerank) if given, else the next packed batch."""
        if first is not None:
            jobs, counts = [first], [1]
        else:
            jobs = self.shared.waiting
            counts = pack([(job.key, len(job.pending), job.alone) for job in jobs],
                          self.shared.model().max_batch)
        chosen = []
        for job, count in zip(jobs, counts, strict=False):
            for _ in range(count):
                chosen.append((job, job.pending.popleft()))
            if count:
                job.in_flight += count
                if isinstance(job, GenerateJob):
                    job.position_now = 0
                job.state = "running"
        return chosen

    def _run_solo(self, job: SoloJob) -> None:
        """Solo work, on this worker: its steps run as it does them, with a progress event after each;
        a cancel stops it at the next one, before anything is saved."""
        shared = self.shared

        def progress(done: int, total: int) -> None:
            with shared.lock:
                job.steps = (done, total)
                if job.cancelling:
                    raise _Cancelled()
                shared.publish_locked(job, "progress", Upscaling(done, total))

        result, state, error = None, "done", None
        try:
            if not job.begin():
                raise _Cancelled()
            result = job.work(progress)
        except _Cancelled:
            state = "cancelled"
        except Exception as failure:
            state, error = "failed", one_line(failure)
            job.failed(failure)
            shared.log(f"job {job.id}: {job.kind} failed ({error})")
        with shared.lock:
            job.in_flight = 0
            if state == "done":
                for saved in job.delivered(result):
                    job.images.append(saved)
                    shared.publish_locked(job, "image", saved)
            if not job.finished:
                shared.finish_locked(job, state, error)

    def _run_batch(self, batch_id: int, chosen: list[tuple[Job, int]]) -> None:
        shared, replica = self.shared, self.replica
        owners = [job for job, _ in chosen]
        tasks = [job.tasks[index] for job, index in chosen]
        jobs = list(dict.fromkeys(owners))
        # Progress is streamed whether or not anyone listens yet: a page subscribes only after its job was
        # accepted, by when an idle worker has begun the batch. Previews are decoded only for listeners.
        saved = [False] * len(tasks)
        requeued: set[Job] = set()
        began = time.perf_counter()
        compiled = False

        def progress(event: Progress) -> None:
            nonlocal compiled
            compiled = compiled or event.compiling
            self._progress(event, owners, jobs)

        def batch(event: Batch) -> None:
            self._saving(jobs)
            for slot, image in zip(event.batch, event.images, strict=True):
                saved[slot] = self._save(owners[slot], image, batch_id)

        view = View(progress=progress, batch=batch)       # the stream's Done passes unseen
        described = ", ".join(f"{owners.count(job)} of job {job.id}" for job in jobs)
        shared.log(f"batch {batch_id}: {len(tasks)} image(s) ({described})"
                   + (f" on {replica.name}" if replica.remote else ""))
        try:
            for event in replica.run(tasks, jobs[0].request.settings, self.preview_every):
                show(event, view)
        except ReplicaDied as died:
            requeued = self._requeue(died, chosen, saved)
        except Exception as error:
            self._batch_failed(error, chosen, saved)
        else:
            elapsed = time.perf_counter() - began
            if shared.metrics is not None:
                shared.metrics.batch_done(replica.name, elapsed)
            with shared.lock:
                shared.seconds_per_batch = batch_seconds(shared.seconds_per_batch, elapsed, compiled)
        with shared.lock:
            for job in jobs:
                unsaved = sum(owner is job and not done for owner, done in zip(owners, saved, strict=True))
                job.in_flight -= unsaved          # (saved ones were counted off as they were saved)
                if job.in_flight == 0:
                    job.position_now = 0
                if job.finished or job.in_flight:
                    continue
                if job in requeued and job.pending:              # its images went back to the line
                    job.state = "queued"
                if job.cancelling:
                    shared.finish_locked(job, "cancelled")
                elif not job.pending:
                    shared.finish_locked(job, "done")
        for job in jobs:
            if job.finished:
                shared.close_run(job)

    def _progress(self, event: Progress, owners: list[GenerateJob], jobs: list[GenerateJob]) -> None:
        """Tells the batch's jobs how far it is, with a preview of their images for those someone
        listens to, when the replica's pacing left one to decode (replicas.previews)."""
        shared = self.shared
        with shared.lock:
            for job in jobs:
                job.position_now = event.position
                job.stage_now = (event.stage, event.seconds_left, event.decode_timed)
                texts = job.prompts()
                job.cut = tuple(text for text in event.cut if text in texts)   # not other jobs' prompts
            watched = [job for job in jobs if job.listeners]
        previews: dict[int, list[Preview]] = {}
        if watched and event.tokens is not None and event.position > 0:
            for slot, image in enumerate(event.images):    # decoded here, once for the whole batch
                if owners[slot].listeners:
                    previews.setdefault(id(owners[slot]), []).append(
                        Preview(image.prompt_index, image.image_index, np.asarray(image.pixels)))
        with shared.lock:
            for job in watched:
                shown = tuple(previews.get(id(job), ()))
                if shown and not job.previewed:
                    job.previewed = True
                    if shared.metrics is not None:
                        shared.metrics.first_preview_after(time.monotonic() - job.arrived)
                shared.publish_locked(job, "progress", forming(shared.status_locked(job), job.stage_now,
                                                               job.cut, shown))

    def _saving(self, jobs: list[GenerateJob]) -> None:
        """Tells the listening jobs of a finished batch that its images are being written."""
        shared = self.shared
        with shared.lock:
            for job in jobs:
                if job.listeners and not job.finished:
                    job.stage_now = ("saving", None, True)
                    shared.publish_locked(job, "progress", forming(shared.status_locked(job), job.stage_now,
                                                                   job.cut))

    def _save(self, job: GenerateJob, image: GeneratedImage, batch_id: int) -> bool:
        shared, replica = self.shared, self.replica
        try:
            with job.saving:
                name = job.writer.save(image, replica=replica.name if replica.remote else "").name
        except Exception as error:
            with shared.lock:
                if not job.finished:
                    shared.finish_locked(job, "failed", f"Could not save an image: {one_line(error)}")
            return False
        saved = SavedImage(job.run, name, image.prompt, image.prompt_index, image.image_index,
                           image.seed, batch_id)
        with shared.lock:
            job.images.append(saved)
            job.batches.append(batch_id)
            job.in_flight -= 1
            shared.images_made += 1
            shared.publish_locked(job, "image", saved)
        if shared.metrics is not None:
            shared.metrics.image_made(replica.name)
        return True

    def _requeue(self, died: ReplicaDied, chosen: list[tuple[Job, int]], saved: list[bool]) -> set[Job]:
        """A replica's process died mid-batch: the images it did not deliver go back to the head of the
        line (each to the front of its job's waiting images; the jobs keep their places), for the next
        free replica. Those it delivered are saved already and are not made again."""
        shared = self.shared
        shared.log(f"{died}")
        requeued = set()
        with shared.lock:
            for slot in reversed(died.unfinished):
                job, index = chosen[slot]
                if not saved[slot] and not job.finished and not job.cancelling:
                    job.pending.appendleft(index)
                    requeued.add(job)
            shared.lock.notify_all()
        return requeued

    def _batch_failed(self, error: Exception, chosen: list[tuple[Job, int]], saved: list[bool]) -> None:
        """A batch of several jobs is tried again one job at a time, so that one job's bad input fails
        only that job; a job alone in its batch fails, with the error as one line."""
        shared = self.shared
        message = one_line(error)
        jobs = list(dict.fromkeys(job for job, _ in chosen))
        shared.log(f"batch failed ({message}); jobs: {', '.join(job.id for job in jobs)}")
        with shared.lock:
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
                        shared.finish_locked(job, "failed", message)
