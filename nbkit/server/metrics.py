"""What an operator scrapes from /metrics: the server's figures in the Prometheus text format.

One `ServerMetrics` per server, each with its own registry (never prometheus_client's global one, so
two servers in one process, as in the tests, do not share or clash). Counters and histograms are
updated where things happen (the queue, the replicas); gauges that are a state (queue length, replicas
ready) are read when scraped, from callables the server hands in.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: a tiny model's batch on a CPU takes well under one, DALL·E Mega's on a CPU minutes.
BATCH_BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)
FIRST_PREVIEW_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)


class ServerMetrics:
    """The figures of one `nbkit serve`."""

    def __init__(self, queue_length: Callable[[], float] | None = None,
                 replicas_ready: Callable[[], float] | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        self._restarts_counted: dict[str, int] = {}
        r = self.registry
        self.queue_length = Gauge("nbkit_queue_jobs", "Unfinished jobs (waiting or running).", registry=r)
        self.replicas_ready = Gauge("nbkit_replicas_ready", "Replicas ready to take a batch.", registry=r)
        if queue_length is not None:
            self.queue_length.set_function(queue_length)
        if replicas_ready is not None:
            self.replicas_ready.set_function(replicas_ready)
        self.images = Counter("nbkit_images", "Images made and saved.", ["replica"], registry=r)
        self.batches = Histogram("nbkit_batch_seconds", "Seconds from a batch's start to its last image.",
                                 ["replica"], buckets=BATCH_BUCKETS, registry=r)
        self.first_preview = Histogram("nbkit_first_preview_seconds",
                                       "Seconds from a job's arrival to its first preview.",
                                       buckets=FIRST_PREVIEW_BUCKETS, registry=r)
        self.refused = Counter("nbkit_refused_full_queue", "Jobs refused with 429 (the queue was full).",
                               registry=r)
        self.restarts = Counter("nbkit_replica_restarts", "Replica processes that died and were replaced.",
                                ["replica"], registry=r)

    def image_made(self, replica: str, count: int = 1) -> None:
        self.images.labels(replica=replica).inc(count)

    def batch_done(self, replica: str, seconds: float) -> None:
        self.batches.labels(replica=replica).observe(seconds)

    def first_preview_after(self, seconds: float) -> None:
        self.first_preview.observe(seconds)

    def queue_full(self) -> None:
        self.refused.inc()

    def replica_restarted(self, replica: str) -> None:
        self.restarts.labels(replica=replica).inc()
        self._restarts_counted[replica] = self._restarts_counted.get(replica, 0) + 1

    def count_restarts(self, restarts: dict[str, int]) -> None:
        """Brings the restart counter up to the replicas' own counts (they find their restarts
        themselves, idle or busy), before a scrape."""
        for replica, count in restarts.items():
            missing = count - self._restarts_counted.get(replica, 0)
            if missing > 0:
                self.restarts.labels(replica=replica).inc(missing)
                self._restarts_counted[replica] = count

    def exposition(self) -> bytes:
        """The body of a /metrics answer (its media type: `CONTENT_TYPE`)."""
        return generate_latest(self.registry)
