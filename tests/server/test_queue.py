"""The queue without a server or a model: its pure rules (packing, gathering, a 429's estimate), the one
preview throttle, and the kinds of queued work on a stand-in replica (an upscale and a rerank wait, join,
go first, fail, cancel and stop as one shape of job). Generation through the queue is tested over HTTP in
test_server.py."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import numpy as np
import pytest

from nbkit.generation.events import Progress
from nbkit.server.folders import SavedImage
from nbkit.server.queue.admission import JobQueue
from nbkit.server.queue.batching import batch_seconds, gather_delay, pack, retry_after_seconds
from nbkit.server.queue.events import FINAL_STATES, Busy, QueueFull, Stopping, Upscaling
from nbkit.server.replicas import previews
from nbkit.server.replicas.base import READY, ModelFacts, Replica, ReplicaPool
from nbkit.server.replicas.previews import paced, preview_due

# ---- the pure rules (batching.py, previews.py)


def test_pack_takes_the_head_of_the_queue_while_the_settings_agree():
    a, b = ("settings a",), ("settings b",)
    assert pack([(a, 2, False), (a, 2, False), (a, 2, False), (a, 2, False)], 8) == [2, 2, 2, 2]
    assert pack([(a, 3, False), (a, 3, False), (a, 3, False)], 8) == [3, 3, 2]
    assert pack([(a, 2, False), (b, 2, False), (a, 2, False)], 8) == [2]       # nobody is overtaken
    assert pack([(a, 0, False), (b, 2, False), (b, 9, False)], 8) == [0, 2, 6]
    assert pack([(a, 2, True), (a, 2, False)], 8) == [2]                      # runs alone after a failure
    assert pack([(a, 2, False), (a, 2, True)], 8) == [2]
    assert pack([(a, 20, False)], 8) == [8]


def test_an_idle_worker_waits_briefly_for_jobs_arriving_together():
    assert gather_delay(10.0, 10.0, 10.0, batch_full=False) == pytest.approx(0.05)
    assert gather_delay(10.0, 9.9, 9.9, batch_full=False) == 0.0            # quiet for long enough
    assert gather_delay(10.0, 10.0, 10.0, batch_full=True) == 0.0           # nothing more fits
    assert gather_delay(10.0, 10.0, 9.52, batch_full=False) == pytest.approx(0.02)   # capped at 0.5 s
    assert gather_delay(10.0, 10.0, 9.4, batch_full=False) == 0.0


def test_previews_are_decoded_first_once_a_batch_then_within_a_share_of_its_time():
    assert preview_due(0, 0.0, 0.1)
    assert preview_due(1, 0.2, 1.0) and not preview_due(1, 7.5, 20.0)


def test_retry_after_counts_the_batches_ahead_and_leaves_compiling_batches_out():
    assert retry_after_seconds(1, 4, 0.2) == 1                 # at least a second
    assert retry_after_seconds(4, 4, 2.0) == 2                 # one batch ahead
    assert retry_after_seconds(9, 4, 2.0) == 6                 # three batches of 4 for 9 images
    assert batch_seconds(None, 11.5, compiled=True) is None    # a compiling batch says nothing
    assert batch_seconds(None, 2.0, compiled=False) == 2.0
    assert batch_seconds(2.0, 11.5, compiled=True) == 2.0
    assert batch_seconds(2.0, 3.0, compiled=False) == pytest.approx(2.3)


def test_paced_keeps_a_batchs_first_preview_then_those_within_the_share(monkeypatch):
    """A decode costs 1 s of a fake clock; tokens arrive 1 s apart: after the first preview of a batch,
    one is kept only while decoding has taken at most a quarter of the batch's time so far."""
    clock = {"now": 0.0}
    monkeypatch.setattr(previews.time, "perf_counter", lambda: clock["now"])

    def decode(tokens):
        clock["now"] += 1.0
        return ["decoded"]

    def stream():
        for _ in range(2):
            yield Progress(0, 0, 0, 0, 0.0, False, 0)            # a batch starts: no tokens yet
            for position in range(1, 9):
                clock["now"] += 1.0
                yield Progress(0, 0, 0, 0, 0.0, False, position, np.zeros((1, 4)), decode)
            yield Progress(0, 0, 0, 0, 0.0, False, 9, stage="decoding")

    kept = []
    for event in paced(stream()):
        if event.tokens is not None:
            assert event.images == ["decoded"]                  # read, as a listening front does
            kept.append(event.position)
    # each batch: position 1 (its first, decoded by t=2); then due while 0.25 × t ≥ seconds spent
    # decoding: at 3 (t=4, 1 s spent), at 6 (t=8, 2 s spent); not at 7, 8 (3 s > 2.5, 2.75)
    assert kept == [1, 3, 6, 1, 3, 6]


def test_paced_counts_only_the_previews_that_are_read():
    """A front with nobody listening reads no preview: every one stays due, and none is decoded."""
    decoded = []
    events = (Progress(0, 0, 0, 0, 0.0, False, position, np.zeros((1, 4)), decoded.append)
              for position in range(1, 6))
    assert [event.tokens is not None for event in paced(events)] == [True] * 5 and decoded == []


# ---- the kinds of queued work, on a stand-in replica


class StandIn(Replica):
    """A ready replica that runs no batch (these tests queue only solo work)."""

    def __init__(self):
        super().__init__("stand-in")
        self.state = READY
        self.model = ModelFacts("tiny", 4, 16, 32, 1.0, 8, 1.0)

    def _events(self, tasks, settings, progress_every, delivered):
        raise AssertionError("no batch is run here")


def until(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the queue did not get there"
        time.sleep(0.01)


@pytest.fixture
def queue(tmp_path):
    made = JobQueue(ReplicaPool([StandIn()]), tmp_path, max_queue=3, log=lambda line: None)
    yield made
    made.stop()
    made.start()               # (a queue never started has no worker to end its waiting work)
    assert made.join(30)


class Folder:
    """What submit_upscale reads of a run folder: its path's name."""

    def __init__(self, name):
        self.path = type("P", (), {"name": name})()


def saved(run, file):
    return SavedImage(run, f"{file}-x4.png", "p", 0, 0, 1, upscaled_from=file)


def test_a_rerank_goes_before_waiting_work_and_takes_no_place_in_line(queue):
    order, gate = [], threading.Event()
    upscale = queue.submit_upscale(Folder("run-a"), "a.png",
                                   lambda progress: order.append("upscale") or saved("run-a", "a.png"))
    ranked = queue.submit_rerank("run-b", lambda: (order.append("rerank"), gate.wait(30), ["ranking"])[-1])
    assert queue.status(upscale).position == 1 and queue.info()["reranks_waiting"] == 1
    assert queue.info()["jobs_waiting"] == 1
    with pytest.raises(Busy, match="already"):               # one rerank of a run at a time
        queue.submit_rerank("run-b", lambda: None)
    queue.start()
    until(lambda: order == ["rerank"])
    gate.set()
    assert ranked.result(30) == ["ranking"]
    until(lambda: queue.status(upscale).state == "done")
    assert order == ["rerank", "upscale"]
    assert [image.file for image in queue.status(upscale).images] == ["a.png-x4.png"]
    assert queue.info()["reranks_waiting"] == 0


def test_the_same_upscale_joins_and_ends_only_when_every_client_cancelled(queue):
    job = queue.submit_upscale(Folder("run"), "a.png", lambda progress: saved("run", "a.png"))
    again = queue.submit_upscale(Folder("run"), "a.png", lambda progress: saved("run", "a.png"))
    assert again is job and queue.status(job).clients == 2
    assert queue.cancel(job).state == "queued"
    seen = []
    missed = queue.listen(job, lambda kind, payload: seen.append(kind))
    assert missed == [("queued", missed[0][1])] and missed[0][1].position == 1
    status = queue.cancel(job)
    assert status.state == "cancelled" and seen == ["cancelled"] and status.kind == "upscale"


def test_reranks_and_upscales_count_toward_a_full_queue(queue):
    futures = [queue.submit_rerank(f"run-{n}", lambda: None) for n in range(2)]
    queue.submit_upscale(Folder("run"), "a.png", lambda progress: saved("run", "a.png"))
    with pytest.raises(QueueFull) as full:
        queue.submit_rerank("run-9", lambda: None)
    assert full.value.retry_after >= 1
    assert all(not future.done() for future in futures)


def test_solo_work_streams_its_steps_and_a_failure_is_the_jobs_alone(queue):
    events = []

    def failing(progress):
        progress(1, 2)
        raise ValueError("the picture is bad\nmore detail")

    job = queue.submit_upscale(Folder("run"), "a.png", failing)
    queue.listen(job, lambda kind, payload: events.append((kind, payload)))
    ranked = queue.submit_rerank("run", lambda: (_ for _ in ()).throw(ValueError("no saved images")))
    queue.start()
    until(lambda: job.finished and ranked.done())
    assert events[0] == ("progress", Upscaling(1, 2)) and events[-1][0] == "failed"
    assert queue.status(job).error == "ValueError: the picture is bad" and queue.status(job).tiles_done == 1
    with pytest.raises(ValueError, match="no saved images"):   # the rerank's own error, for a 400
        ranked.result(0)


def test_stopping_ends_waiting_work_and_answers_a_waiting_rerank(tmp_path):
    queue = JobQueue(ReplicaPool([StandIn()]), tmp_path, log=lambda line: None)
    job = queue.submit_upscale(Folder("run"), "a.png", lambda progress: saved("run", "a.png"))
    ranked = queue.submit_rerank("run", lambda: ["never"])
    queue.stop()
    queue.start()
    assert queue.join(30)
    assert queue.status(job).state == "cancelled" and queue.status(job).state in FINAL_STATES
    with pytest.raises(Stopping):
        ranked.result(0)
    with pytest.raises(Stopping):
        queue.submit_rerank("other", lambda: None)
    assert isinstance(ranked, concurrent.futures.Future)
