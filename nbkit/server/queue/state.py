"""What the admission side (admission.JobQueue) and the workers (worker.py) share: the line of unfinished
work and the jobs by id, under one lock, with the few operations both sides do under it (a job's place
and status, telling its listeners, ending it), and the index of run folders by request."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbkit.generation.request import GenerationRequest
from nbkit.output.runs import RunWriter, request_run_key
from nbkit.output.storage import RunFolder
from nbkit.server.folders import for_clients
from nbkit.server.queue.events import one_line
from nbkit.server.queue.work import GenerateJob, Job
from nbkit.server.replicas.base import ModelFacts, NoReplicaReady, ReplicaPool

KEPT_FINISHED_JOBS = 1000        # finished jobs remembered for status requests; older ones are forgotten


class RunIndex:
    """Run key → its folder under `out`: one scan of the output folder at the first request
    (RunFolder.index), so a request on a slow disk such as Drive does not rescan every run.json."""

    def __init__(self, out: Path):
        self.out = out
        self._lock = threading.Lock()            # a submit looks for its run folder, then makes one
        self._runs: dict[str, RunFolder] | None = None

    def open(self, model: str, request: GenerationRequest) -> RunWriter:
        """The run writer of `request`, its folder made (or reopened: it knows what the folder lacks)."""
        with self._lock:                         # only submits wait here, never status or event requests
            if self._runs is None:
                self._runs = RunFolder.index(self.out)
            key = request_run_key(model, request)
            if key in self._runs and not self._runs[key].path.is_dir():
                del self._runs[key]              # removed from the disk while the server ran: a new one
            writer = RunWriter.open(model, request, self.out, self._runs)
            self._runs[writer.key] = writer.make_folder()
        return writer

    def forget(self, writer: RunWriter) -> None:
        with self._lock:
            if self._runs is not None and self._runs.get(writer.key) is writer.folder:
                del self._runs[writer.key]


class QueueState:
    """The shared state. Methods named `*_locked` are called with `lock` held."""

    def __init__(self, pool: ReplicaPool, out: Path, log: Callable[[str], None] | None, metrics: Any):
        self.pool, self.out, self.metrics = pool, out, metrics      # metrics: a ServerMetrics, or None
        self.log = log or _to_stderr
        self.lock = threading.Condition()
        self.runs = RunIndex(out)
        self.jobs: dict[str, Job] = {}
        self.waiting: list[Job] = []             # unfinished work, in arrival order
        self.stopping = False
        self.in_flight = 0                       # batches (and solo jobs other than reranks) running now
        self.seconds_per_batch: float | None = None     # None until a batch that did not compile ends
        self.last_arrival = 0.0
        self.batches_run = 0
        self.images_made = 0

    def model(self) -> ModelFacts:
        """The replicas' model; NoReplicaReady (503) before any replica has been ready."""
        model = self.pool.model
        if model is None:
            raise NoReplicaReady(none_ready(self.pool))
        return model

    def position_locked(self, job: Job) -> int:
        """0 while it runs (or has ended); else its place in line (1: next). Reranks, which go first,
        take no place."""
        if job.state != "queued" or job not in self.waiting or job.first:
            return 0
        ahead = self.waiting[:self.waiting.index(job)]
        return 1 + sum(not other.first for other in ahead)

    def status_locked(self, job: Job):
        length = self.model().image_length if isinstance(job, GenerateJob) else 0
        return job.status(self.position_locked(job), length)

    def publish_locked(self, job: Job, kind: str, payload: Any) -> None:
        for listener in list(job.listeners):
            try:
                listener(kind, payload)
            except Exception as error:       # a listener's failure must not stop the worker
                self.log(f"job {job.id}: a listener failed ({one_line(error)}); dropping it")
                job.listeners.remove(listener)

    def finish_locked(self, job: Job, state: str, error: str | None = None) -> None:
        """Ends `job` as `state`: out of the line, its listeners told (its run is closed after, outside the
        lock: `close_run`)."""
        shown = None if error is None else for_clients(error, self.out)
        if shown != error:
            self.log(f"job {job.id}: {error}")          # the whole message stays in the server's log
        job.state, job.error = state, shown
        job.pending.clear()
        if job in self.waiting:
            self.waiting.remove(job)
        job.ended()
        self.publish_locked(job, state, self.status_locked(job))
        job.listeners.clear()
        self.forget_old_locked()
        self.lock.notify_all()

    def forget_old_locked(self) -> None:
        finished = [job for job in self.jobs.values() if job.finished]
        for job in finished[:max(0, len(finished) - KEPT_FINISHED_JOBS)]:
            del self.jobs[job.id]

    def close_run(self, job: Job) -> None:
        """After a generation job's end, outside the lock: a done job's run gets its grids (from the
        pixels in memory); a run folder that got no image at all (the job failed or was cancelled before
        its first) is removed, and forgotten by the index. Other kinds work in a run not their own."""
        if not isinstance(job, GenerateJob):
            return
        with job.saving:
            try:
                if job.state == "done":
                    job.writer.finish(grid=True)
                elif job.writer.folder is not None and job.writer.folder.remove_if_empty():
                    self.runs.forget(job.writer)
            except OSError as error:
                self.log(f"job {job.id}: could not finish its run folder: {one_line(error)}")


def none_ready(pool: ReplicaPool) -> str:
    states = ", ".join(f"{replica.name} {replica.state}" for replica in pool.replicas)
    return (f"No generation replica is ready ({states}): try again shortly; /api/info shows each "
            "replica's state and last error.")


def _to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")        # one write: lines from two threads do not interleave
    sys.stderr.flush()
