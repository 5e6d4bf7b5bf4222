"""`nbkit serve` with Ray Serve replicas, called over HTTP: the real front on 127.0.0.1, a real local Ray
(started once a session: conftest's keep_ray) with two CPU replicas on the tiny models (started once for
the module), and one more replica whose model cannot load. Concurrency is made deterministic by hooks on
the events each replica sends the front (a barrier both batches must reach, a gate the test opens, a
SIGKILL at a chosen event), never by sleeping. The embedded default (no Ray) is checked here too for
/metrics and its gate.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import threading
from pathlib import Path

import pytest
from conftest import COMPILATION_CACHE, DALLEBART, GOLDEN, VQGAN, tiny_pipeline

from nbkit.generation.events import Batch, Progress
from nbkit.generation.pipeline import Pipeline
from nbkit.server.job_input import parse_job
from nbkit.server.protocol import Limits
from tests.server.test_server import call, events, finished, manifest, submit, wait_for

DALLEBART, VQGAN = str(DALLEBART), str(VQGAN)
MAX_BATCH = 4
MAX_QUEUE = 3
TOKEN = "cluster-test-token"


def needs_ray():
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray Serve is not installed (pip install 'nbkit[cluster]')")


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return tiny_pipeline(MAX_BATCH)


def serve(load, out: Path, lines: list[str], **options):
    from nbkit.server.launch import launch
    from nbkit.server.options import ServerOptions

    settings = {"out": out, "model": DALLEBART, "vqgan": VQGAN, "clip": None, "preview_every": 32, **options}
    return launch(ServerOptions(**settings), 0, load, background=True, log=lines.append)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, keep_ray):
    """(running front, its pool, its log lines, its output folder): two replicas, both ready."""
    needs_ray()
    from nbkit.server.replicas.deployment import ReplicaModel
    from nbkit.server.replicas.ray_pool import PoolConfig, RayPool

    model = ReplicaModel(DALLEBART, VQGAN, max_batch=MAX_BATCH, compilation_cache=str(COMPILATION_CACHE))
    lines: list[str] = []
    out = tmp_path_factory.mktemp("cluster")
    config = PoolConfig(2, model, {"num_cpus": 1}, num_cpus=4)
    running = serve(lambda: keep_ray(RayPool(config, lines.append)), out, lines, max_queue=MAX_QUEUE)
    try:
        running.pool.wait_ready(2, timeout=300)
        yield running, running.pool, lines, out
    finally:
        running.stop()                     # stops the replicas (Ray stays up for the session: keep_ray)


@contextlib.contextmanager
def hooked(pool, hook):
    """Calls hook(replica, event) on every event a replica sends, before the front reads it."""
    for replica in pool.replicas:
        inner = replica._events

        def wrapped(tasks, settings, every, delivered, inner=inner, replica=replica):
            for event in inner(tasks, settings, every, delivered):
                hook(replica, event)
                yield event

        replica._events = wrapped
    try:
        yield
    finally:
        for replica in pool.replicas:
            del replica._events


def reference_tokens(pipe: Pipeline, body: dict, out: Path) -> dict[tuple[int, int], list[int]]:
    """The tokens this process's own Pipeline draws for the same job body."""
    request = parse_job(body, Limits(16, 300, 16384)).request(out)
    return {(image.prompt_index, image.image_index): image.tokens.tolist()
            for event in pipe.stream_tasks(request.tasks(), request.settings) if isinstance(event, Batch)
            for image in event.images}


def saved_once(out: Path, status: dict, n: int) -> list[dict]:
    """The job's manifest lines, each image exactly once, each with its PNG on disk."""
    lines = manifest(out, status["run"])
    keys = [(line["prompt_index"], line["image_index"]) for line in lines]
    assert len(keys) == len(set(keys)) == n, keys
    files = sorted(path.name for path in (out / status["run"]).glob("*.png") if "grid" not in path.name)
    assert files == sorted(line["file"] for line in lines)
    return lines


def metric(url: str, name: str) -> float:
    status, _, text = call(url + "metrics")
    assert status == 200
    found = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text.decode(), re.M)
    return sum(float(value) for value in found)


def test_jobs_from_several_clients_run_on_both_replicas_at_once_with_the_same_tokens(cluster, pipe):
    running, pool, _lines, out = cluster
    bodies = [{"prompts": ["an armchair shaped like an avocado"], "n_images": 4, "seed": 11},
              {"prompts": ["a lighthouse", "a fox"], "n_images": 2, "seed": 12},
              {"prompts": ["a small boat"], "n_images": 2, "seed": 13}]
    both_started = threading.Barrier(2, timeout=240)
    waited: set[str] = set()

    def hold_first_batches(replica, event):
        if isinstance(event, Progress) and event.position == 0 and replica.name not in waited:
            waited.add(replica.name)
            both_started.wait()            # neither batch goes on until both replicas have begun one

    with hooked(pool, hold_first_batches):
        jobs: list = [None] * len(bodies)
        clients = [threading.Thread(target=lambda i=i: jobs.__setitem__(i, submit(running.url, bodies[i])))
                   for i in range(len(bodies))]
        for client in clients:
            client.start()
        for client in clients:
            client.join(60)
        statuses = [finished(running.url, job["id"]) for job in jobs]
    assert not both_started.broken and waited == {"replica-0", "replica-1"}
    makers = set()
    for body, status in zip(bodies, statuses, strict=True):
        assert status["state"] == "done", status
        lines = saved_once(out, status, len(body["prompts"]) * body["n_images"])
        expected = reference_tokens(pipe, body, out)
        for line in lines:
            assert line["tokens"] == expected[(line["prompt_index"], line["image_index"])]
            assert line["replica"] in ("replica-0", "replica-1")
            makers.add(line["replica"])
    assert makers == {"replica-0", "replica-1"}
    _, _, info = call(running.url + "api/info")
    assert [r["name"] for r in info["replicas"]] == ["replica-0", "replica-1"]
    assert all(r["state"] == "ready" and r["device"].startswith("cpu") and r["batches"] >= 1
               for r in info["replicas"])
    assert sum(r["images"] for r in info["replicas"]) >= 10 and info["max_batch"] == MAX_BATCH
    assert metric(running.url, "nbkit_images_total") >= 10
    assert metric(running.url, "nbkit_batch_seconds_count") >= 3


def test_a_full_queue_answers_429_while_both_replicas_are_busy(cluster):
    running, pool, _lines, _out = cluster
    go, held = threading.Event(), threading.Semaphore(0)

    def hold(replica, event):
        if isinstance(event, Progress) and event.position == 0:
            held.release()
            assert go.wait(240)

    refused_before = metric(running.url, "nbkit_refused_full_queue_total")
    with hooked(pool, hold):
        try:
            busy = [submit(running.url, {"prompts": ["a queue"], "n_images": 4, "seed": 30 + i})
                    for i in range(2)]
            for _ in busy:
                assert held.acquire(timeout=120)           # one batch held on each replica
            waiting = submit(running.url, {"prompts": ["a queue"], "n_images": 1, "seed": 40})
            status, headers, answer = call(running.url + "api/jobs",
                                           {"prompts": ["one too many"], "n_images": 1, "seed": 41})
            assert status == 429 and int(headers["retry-after"]) >= 1, answer
            assert "queue is full" in answer["error"]
        finally:
            go.set()
        for job in [*busy, waiting]:
            assert finished(running.url, job["id"])["state"] == "done"
    assert metric(running.url, "nbkit_refused_full_queue_total") == refused_before + 1


def test_the_page_makes_images_with_two_replicas(cluster):
    from playwright.sync_api import expect, sync_playwright

    from tests.server.test_page import chromium

    running, _pool, _lines, out = cluster
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium())
        try:
            page = browser.new_page()
            page.set_default_timeout(120_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(running.url)
            expect(page.locator("#server-info")).to_have_class(re.compile(r"\bonline\b"), timeout=60_000)
            page.fill("#n_images", "2")
            page.locator("#prompts").press_sequentially("a green pear on two replicas")
            page.locator("#prompts").press("Enter")
            run = page.locator(".run")
            expect(run).to_have_attribute("data-state", "done", timeout=120_000)
            expect(run.locator(".tile:not(.pending) img")).to_have_count(2)
            name = run.get_attribute("data-run")
            assert not errors, errors
        finally:
            browser.close()
    assert {line["replica"] for line in manifest(out, name)} <= {"replica-0", "replica-1"}
    assert len(manifest(out, name)) == 2


def test_a_replica_killed_mid_batch_loses_nothing_and_duplicates_nothing(cluster, pipe):
    running, pool, lines, out = cluster
    killed: list[str] = []

    def kill_one(replica, event):
        if isinstance(event, Progress) and event.position > 0 and not killed:
            killed.append(replica.name)
            os.kill(replica.pid, signal.SIGKILL)      # the replica's process, in the middle of its batch

    body = {"prompts": ["a red bus"], "n_images": 8, "seed": 21}         # two batches of 4: one per replica
    with hooked(pool, kill_one):
        job = submit(running.url, body)
        seen = [kind for kind, _data in events(f"{running.url}api/jobs/{job['id']}/events", timeout=300)]
    assert seen[-1] == "done" and seen.count("image") == 8
    status = finished(running.url, job["id"])
    assert status["state"] == "done" and status["images_done"] == 8
    expected = reference_tokens(pipe, body, out)
    for line in saved_once(out, status, 8):
        assert line["tokens"] == expected[(line["prompt_index"], line["image_index"])]
    assert killed and any("died during a batch" in line and "go back to the queue" in line for line in lines)
    _, _, info = call(running.url + "api/info")
    assert sum(r["restarts"] for r in info["replicas"]) == 1
    assert metric(running.url, "nbkit_replica_restarts_total") == 1


def test_a_replica_that_cannot_load_its_model_is_reported_and_new_jobs_get_503(cluster, tmp_path):
    from nbkit.server.replicas.deployment import ReplicaModel
    from nbkit.server.replicas.ray_pool import PoolConfig, RayPool

    lines: list[str] = []
    bad = ReplicaModel(str(GOLDEN / "no-such-model"), VQGAN)
    config = PoolConfig(1, bad, {"num_cpus": 1}, app_prefix="nbkit-bad")
    running = serve(lambda: RayPool(config, lines.append), tmp_path, lines)
    try:
        (replica,) = running.pool.replicas
        assert replica.state == "failed"                  # launch waited until it had failed
        assert any("failed to start" in line and "no-such-model" in line for line in lines)
        _, _, info = call(running.url + "api/info")
        (shown,) = info["replicas"]
        assert shown["state"] == "failed" and "no-such-model" in shown["last_error"]
        status, headers, answer = call(running.url + "api/jobs", {"prompts": ["anything"]})
        assert status == 503 and headers["retry-after"], answer
        assert "No generation replica is ready" in answer["error"]
        assert metric(running.url, "nbkit_replicas_ready") == 0
    finally:
        running.stop()
    from ray import serve as ray_serve

    assert "nbkit-bad-0" not in ray_serve.status().applications    # the front removed what it started


def test_the_embedded_default_has_metrics_behind_the_same_gate(pipe, tmp_path):
    lines: list[str] = []
    running = serve(lambda: pipe, tmp_path, lines, token=TOKEN)
    try:
        bare = running.url.replace(f"t/{TOKEN}/", "")
        assert call(bare + "metrics")[0] == 401
        job = submit(running.url, {"prompts": ["a lamp"], "n_images": 2, "seed": 3})
        assert [kind for kind, _ in events(f"{running.url}api/jobs/{job['id']}/events")][-1] == "done"
        assert metric(running.url, 'nbkit_images_total') == 2
        assert metric(running.url, "nbkit_first_preview_seconds_count") == 1
        assert metric(running.url, "nbkit_queue_jobs") == 0
        _, _, info = call(running.url + "api/info")
        assert [r["name"] for r in info["replicas"]] == ["local"] and info["replicas"][0]["images"] == 2
        assert "replica" not in manifest(tmp_path, job["run"])[0]       # records unchanged without Ray
    finally:
        running.stop()
    assert wait_for(lambda: not running._thread.is_alive(), 60)


def test_the_queue_puts_a_dead_replicas_images_back_at_the_head_without_ray(pipe, tmp_path):
    """The requeue itself, deterministic and without Ray: one replica dies at its first batch, before
    delivering anything; the other (held until then) makes its own batch and then the returned one."""
    from nbkit.generation.request import GenerationRequest
    from nbkit.server.queue.admission import JobQueue
    from nbkit.server.replicas.base import DEAD, ReplicaDied, ReplicaPool
    from nbkit.server.replicas.local import InProcessReplica
    from tests.server_process import gated_replica

    class DiesAtOnce(InProcessReplica):
        remote = True                               # so its name would go in records (it saves none)
        calls = 0

        def _events(self, tasks, settings, progress_every, delivered):
            self.calls += 1
            self.state = DEAD
            raise ReplicaDied(self.name, range(len(tasks)), tasks, "killed by the test")
            yield

    dying, held = DiesAtOnce(pipe, "dies"), gated_replica(pipe, "held")
    held.remote = True
    lines: list[str] = []
    queue = JobQueue(ReplicaPool([dying, held]), tmp_path, log=lines.append)
    queue.start()
    try:
        job = queue.submit(GenerationRequest(["back to the head"], 8, 5))
        assert held.wait_started() == MAX_BATCH
        wait_for(lambda: dying.calls == 1 and any("go back to the queue" in line for line in lines))
        assert queue.status(job).state == "running" and len(job.pending) == MAX_BATCH
        held.open()
        wait_for(lambda: queue.status(job).state == "done", 300)
    finally:
        held.open()
        queue.stop()
        assert queue.join(120)
    assert dying.calls == 1 and held.counts.images == 8
    lines_saved = saved_once(tmp_path, {"run": job.run}, 8)
    assert {line["replica"] for line in lines_saved} == {"held"}
