"""What the front sees of a replica: a name, a state, counts, and `run`, which makes one packed batch.

`run(tasks, settings, progress_every)` yields the pipeline's own events — `Progress` (its `images` are
ready to read: decoded on the replica for a remote one), `Batch` (finished `GeneratedImage`s, tokens and
pixels) and `Done` — so the front saves and publishes them as it does for an in-process Pipeline. A
replica whose process dies during `run` raises `ReplicaDied`, naming the tasks it did not deliver: the
front puts them back at the head of its queue, and nothing that was delivered is made twice.
"""

from __future__ import annotations

import abc
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from nbkit.generation.events import Batch, Event
from nbkit.generation.request import ImageTask
from nbkit.generation.sampling import SamplingSettings

STARTING, READY, FAILED, DEAD = "starting", "ready", "failed", "dead"
STATES = (STARTING, READY, FAILED, DEAD)     # dead: its process died; Ray Serve is starting another


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What the front must know of the model its replicas run, to pack, check and describe jobs: its name
    (in every record), batch size, tokens per image, codebook size (top_k's bound) and the sampling
    defaults unset settings fall back to. A replica reports them once it has loaded its Pipeline."""

    name: str
    max_batch: int
    image_length: int
    codebook_size: int
    temperature: float
    top_k: int
    top_p: float

    @classmethod
    def of_pipeline(cls, pipe) -> ModelFacts:
        config = pipe.model.config
        return cls(pipe.name, pipe.max_batch, config.image_length, pipe.vqgan.config.n_embed,
                   config.temperature, config.top_k, config.top_p)


class ReplicaDied(Exception):
    """A replica's process died before it delivered every image of a batch.

    `unfinished`: indexes (into the tasks given to `run`) of the images not delivered, in order;
    `tasks`: those tasks. Every other task of the batch came back in a `Batch` event before the error.
    """

    def __init__(self, replica: str, unfinished: Sequence[int], tasks: Sequence[ImageTask], cause: str):
        super().__init__(f"Replica {replica} died during a batch ({cause}); {len(unfinished)} image(s) of it "
                         "were not made and go back to the queue.")
        self.replica, self.unfinished, self.tasks, self.cause = replica, list(unfinished), list(tasks), cause


class NoReplicaReady(Exception):
    """No replica can take a batch now (all starting, failed or dead): the front answers 503."""


@dataclasses.dataclass
class ReplicaCounts:
    """What a replica has done, for /api/info and /metrics."""

    batches: int = 0
    images: int = 0
    restarts: int = 0
    last_error: str | None = None


class Replica(abc.ABC):
    """One place that runs packed batches, one at a time: the Pipeline of this process, or a remote
    process (`remote`: its name goes in the records of the images it makes)."""

    name: str
    remote = False

    def __init__(self, name: str):
        self.name = name
        self.model: ModelFacts | None = None      # known once it is ready
        self.state = STARTING
        self.device = ""                   # in words, e.g. "cpu ×1" or "gpu NVIDIA H200 ×1"
        self.pid: int | None = None
        self.counts = ReplicaCounts()
        self._busy = threading.Lock()

    @property
    def busy(self) -> bool:
        """A batch is running on it now."""
        return self._busy.locked()

    @property
    def ready(self) -> bool:
        return self.state == READY

    def run(self, tasks: Sequence[ImageTask], settings: SamplingSettings,
            progress_every: int | None = None) -> Iterator[Event]:
        """Makes `tasks` (one packed batch, or more if they exceed its max_batch) and yields the events.
        The replica is busy from this call until the events end, fail or the iterator is closed (so the
        front may pick the next idle replica at once, before this batch's thread starts reading). Raises
        ReplicaDied if the replica's process dies first; the pipeline's errors for bad tasks pass through."""
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(f"Replica {self.name} is already running a batch: it runs one at a time.")
        try:
            tasks = list(tasks)
            delivered = [False] * len(tasks)
            events = self._events(tasks, settings, progress_every, delivered)
            return _Releasing(self._counted(events, delivered), self._busy.release)
        except BaseException:
            self._busy.release()
            raise

    def _counted(self, events: Iterator[Event], delivered: list[bool]) -> Iterator[Event]:
        for event in events:
            if isinstance(event, Batch):
                for index in event.batch:
                    delivered[index] = True
                self.counts.batches += 1
                self.counts.images += len(event.images)
            yield event

    @abc.abstractmethod
    def _events(self, tasks: list[ImageTask], settings: SamplingSettings, progress_every: int | None,
                delivered: list[bool]) -> Iterator[Event]:
        """The stream itself; `delivered` tells which tasks came back already (for ReplicaDied)."""

    def info(self) -> dict:
        """For /api/info."""
        return {"name": self.name, "state": self.state, "device": self.device, "pid": self.pid,
                "busy": self.busy, "batches": self.counts.batches, "images": self.counts.images,
                "restarts": self.counts.restarts, "last_error": self.counts.last_error}


class _Releasing:
    """A replica's events that free the replica once: at their end, on an error, or when closed."""

    def __init__(self, events: Iterator[Event], release: Callable[[], None]):
        self._events, self._release = events, release
        self._released = threading.Lock()

    def __iter__(self) -> _Releasing:
        return self

    def __next__(self) -> Event:
        try:
            return next(self._events)
        except BaseException:
            self._free()
            raise

    def close(self) -> None:
        try:
            self._events.close()
        finally:
            self._free()

    def __del__(self):
        self._free()

    def _free(self) -> None:
        if self._released.acquire(blocking=False):
            self._release()


class ReplicaPool:
    """The replicas the front dispatches to (a worker thread each); this base holds replicas that need
    no stopping (in-process ones)."""

    replicas: list[Replica]

    def __init__(self, replicas: Sequence[Replica]):
        self.replicas = list(replicas)

    @property
    def model(self) -> ModelFacts | None:
        """The model facts of the first replica that reported them (all replicas run one model)."""
        return next((replica.model for replica in self.replicas if replica.model is not None), None)

    def ready(self) -> list[Replica]:
        return [replica for replica in self.replicas if replica.ready]

    def idle(self) -> list[Replica]:
        """Ready replicas with no batch running: the front starts one batch on each."""
        return [replica for replica in self.ready() if not replica.busy]

    @property
    def restarts(self) -> int:
        return sum(replica.counts.restarts for replica in self.replicas)

    def info(self) -> list[dict]:
        return [replica.info() for replica in self.replicas]

    def wait_ready(self, count: int = 1, timeout: float = 300.0) -> list[Replica]:
        """Blocks until `count` replicas are ready, or every one that is not has failed. Raises
        NoReplicaReady when none is ready by `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            ready = self.ready()
            settled = all(replica.state in (READY, FAILED) for replica in self.replicas)
            if len(ready) >= count or settled:
                if ready:
                    return ready
                break
            if time.monotonic() > deadline:
                if ready:
                    return ready
                break
            time.sleep(0.2)
        errors = "; ".join(f"{r.name}: {r.counts.last_error}" for r in self.replicas if r.counts.last_error)
        raise NoReplicaReady("No generation replica is ready" + (f" ({errors})" if errors else "")
                             + ": see the log, and /api/info for each replica's state.")

    def stop(self) -> None:
        """Stops what this pool started (nothing, here)."""
