"""Generation replicas: the in-process one (no Ray), and Ray Serve replicas on a real local Ray.

One local Ray a session (started by the first Ray pool, here or in test_cluster.py: conftest's
keep_ray), with two CPU replicas on the tiny models, and one more pool whose model cannot load.
Replicas must give the same tokens as a Pipeline in this process; a replica SIGKILLed in the middle of
a run must name exactly the tasks it did not deliver, and its restarted successor must make them with
the same tokens.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import COMPILATION_CACHE, DALLEBART, GOLDEN, VQGAN, tiny_pipeline

from nbkit.generation.events import Batch, Done, GeneratedImage, Progress
from nbkit.generation.pipeline import Pipeline
from nbkit.generation.request import GenerationRequest, ImageTask
from nbkit.generation.sampling import SamplingSettings
from nbkit.server.replicas import FAILED, READY, LocalPool, NoReplicaReady, ReplicaDied
from nbkit.server.replicas.previews import paced
from nbkit.server.replicas.wire import WirePreview, from_wire, to_wire

DALLEBART, VQGAN = str(DALLEBART), str(VQGAN)
MAX_BATCH = 4
SETTINGS = SamplingSettings()


def tasks_of(prompts: list[str], n_images: int, seed: int) -> list[ImageTask]:
    return GenerationRequest(prompts, n_images, seed, SETTINGS).tasks()


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return tiny_pipeline(MAX_BATCH)


def reference(pipe: Pipeline, tasks: list[ImageTask]) -> list[GeneratedImage]:
    return [image for event in pipe.stream_tasks(tasks, SETTINGS) if isinstance(event, Batch)
            for image in event.images]


def collect(events) -> tuple[list[GeneratedImage], list]:
    images, seen = [], []
    for event in events:
        seen.append(event)
        if isinstance(event, Batch):
            images += event.images
    return images, seen


def same_images(made: list[GeneratedImage], expected: list[GeneratedImage]) -> None:
    assert [(i.prompt, i.prompt_index, i.image_index, i.seed) for i in made] == \
        [(i.prompt, i.prompt_index, i.image_index, i.seed) for i in expected]
    for image, wanted in zip(made, expected, strict=True):
        np.testing.assert_array_equal(image.tokens, wanted.tokens)
        assert image.pixels.shape == wanted.pixels.shape and image.pixels.dtype == np.uint8


# ---- without Ray


def test_the_default_path_imports_no_ray():
    code = ("import sys, nbkit.server.replicas, nbkit.server.replicas.wire, nbkit.server.metrics, "
            "nbkit.server.launch, nbkit.server.command, nbkit.server.app; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.getcwd()}, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_in_process_replica_passes_the_pipeline_events_through(pipe):
    pool = LocalPool(pipe)
    (replica,) = pool.idle()
    tasks = tasks_of(["a red apple", "a blue sea"], 3, seed=5)        # 6 tasks: two batches of ≤ 4
    running = replica.run(tasks, SETTINGS, progress_every=64)
    assert replica.busy and pool.idle() == []          # busy from the call, before its events are read
    with pytest.raises(RuntimeError, match="one at a time"):
        replica.run(tasks, SETTINGS)
    images, events = collect(running)
    same_images(images, reference(pipe, tasks))
    assert isinstance(events[-1], Done)
    assert any(isinstance(e, Progress) and e.position > 0 and len(e.images) == MAX_BATCH for e in events)
    assert replica.info()["batches"] == 2 and replica.info()["images"] == 6
    assert replica.state == READY and not replica.busy and pool.restarts == 0
    abandoned = replica.run(tasks, SETTINGS)
    next(abandoned)
    abandoned.close()                                  # a front that stops reading frees the replica
    assert not replica.busy and pool.idle() == [replica]
    with pytest.raises(ValueError, match="progress_every"):
        replica.run(tasks, SETTINGS, progress_every=0)
    assert not replica.busy


def test_progress_crosses_the_wire_with_its_previews_decoded(pipe):
    tasks = tasks_of(["a cat"], 2, seed=1)
    sent = list(to_wire(paced(pipe.stream_tasks(tasks, SETTINGS, 128))))   # as a Ray replica sends them
    previews = [event for event in sent if isinstance(event, WirePreview)]
    # 1 + 128: the first token is drawn at start; 256: the decoding notice, sent without a preview
    assert [event.position for event in previews] == [0, 129, 256]
    assert previews[0].images is None and len(previews[1].images) == 2     # position 0 has no tokens
    assert previews[2].images is None
    local = [event for event in pipe.stream_tasks(tasks, SETTINGS, 128) if isinstance(event, Progress)]
    back = from_wire(previews[1])
    assert isinstance(back, Progress) and back.batch == local[1].batch
    for remote, here in zip(back.images, local[1].images, strict=True):
        np.testing.assert_array_equal(remote.tokens, here.tokens)
        np.testing.assert_array_equal(remote.pixels, here.pixels)
    assert from_wire(previews[0]).images == []
    assert previews[0].stage in ("compiling", "drawing") and previews[2].stage == "decoding"
    back_all = [from_wire(event) for event in previews]         # the stage vocabulary crosses intact
    assert [(e.stage, e.seconds_left, e.cut) for e in back_all] == \
        [(e.stage, e.seconds_left, e.cut) for e in previews]
    assert back_all[2].label.startswith("decoding pixels · 0 of 2 images")


def test_replica_resources_are_parsed_or_refused_in_one_line():
    from nbkit.server.replicas.ray_pool import parse_replica_resources as parse

    assert parse("num_cpus=1") == {"num_cpus": 1}
    assert parse("num_gpus=1, num_cpus=0.5") == {"num_gpus": 1, "num_cpus": 0.5}
    assert parse("num_cpus=8,TPU=4") == {"num_cpus": 8, "resources": {"TPU": 4}}
    for bad in ("gpus", "num_gpus=-1", "num_cpus=one", "=1"):
        with pytest.raises(ValueError, match="name=amount"):
            parse(bad)


def test_a_replica_keeps_the_weights_as_the_front_was_told(pipe):
    """`nbkit serve --weight-storage int8 --replicas N`: each replica loads int8 kernels (no Ray needed to
    build one) and its images record it, as the in-process server's do."""
    from nbkit.server.replicas.deployment import GenerationReplica, ReplicaModel

    replica = GenerationReplica(ReplicaModel(DALLEBART, VQGAN, "float32", MAX_BATCH, weight_storage="int8"))
    assert replica.pipe.weight_storage == "int8" and pipe.weight_storage == "float32"
    images = reference(replica.pipe, tasks_of(["a red cube"], 1, seed=3))
    assert [image.weight_storage for image in images] == ["int8"]


# ---- on a real local Ray


@pytest.fixture(scope="module")
def pools(keep_ray):
    # Not imported here: the pool imports Ray itself, after telling it to stay on 127.0.0.1.
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray Serve is not installed (pip install 'nbkit[cluster]')")
    from nbkit.server.replicas import ray_pool
    from nbkit.server.replicas.deployment import ReplicaModel

    model = ReplicaModel(DALLEBART, VQGAN, max_batch=MAX_BATCH, compilation_cache=str(COMPILATION_CACHE))
    lines: list[str] = []
    config = ray_pool.PoolConfig(2, model, {"num_cpus": 1}, num_cpus=4)
    good = keep_ray(ray_pool.RayPool(config, lines.append))
    bad = None
    try:
        bad = ray_pool.RayPool(ray_pool.PoolConfig(1, ReplicaModel(str(GOLDEN / "no-such-model"), VQGAN),
                                                   {"num_cpus": 1}, app_prefix="nbkit-bad"), lines.append)
        good.wait_ready(2, timeout=300)
        yield good, bad, lines, model
    finally:
        if bad is not None:
            bad.stop()
        good.stop()


def test_the_local_ray_listens_on_the_loopback_address_only(pools):
    import ray

    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}


def test_two_batches_run_on_both_replicas_at_once_with_the_same_tokens(pools, pipe):
    good, _bad, _lines, _model = pools
    replicas = good.idle()
    assert len(replicas) == 2 and len({replica.pid for replica in replicas}) == 2
    jobs = [tasks_of(["an armchair shaped like an avocado"], 3, seed=11),
            tasks_of(["a lighthouse", "a fox"], 2, seed=12)]
    both_started = threading.Barrier(2, timeout=240)
    results: dict[str, list[GeneratedImage]] = {}

    def run(replica, tasks):
        images = []
        for event in replica.run(tasks, SETTINGS, progress_every=128):
            if isinstance(event, Progress) and event.position == 0:
                both_started.wait()       # neither batch goes on until both replicas have started one
            if isinstance(event, Batch):
                images += event.images
        results[replica.name] = images

    threads = [threading.Thread(target=run, args=pair) for pair in zip(replicas, jobs, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not both_started.broken
    for replica, tasks in zip(replicas, jobs, strict=True):
        same_images(results[replica.name], reference(pipe, tasks))
        assert replica.counts.images == len(tasks) and replica.state == READY


def test_a_replica_killed_mid_run_names_its_unfinished_tasks_and_its_successor_makes_them(pools, pipe):
    good, _bad, lines, _model = pools
    replica = good.idle()[0]
    old_pid = replica.pid
    tasks = tasks_of(["a red bus", "a green field"], 4, seed=21)     # 8 tasks: two batches of 4
    delivered: list[GeneratedImage] = []
    with pytest.raises(ReplicaDied) as died:
        for event in replica.run(tasks, SETTINGS, progress_every=32):
            if isinstance(event, Progress) and event.position > 0 and event.images_done == MAX_BATCH:
                os.kill(old_pid, signal.SIGKILL)       # in the second batch, after the first came back
            if isinstance(event, Batch):
                delivered += event.images
    error = died.value
    assert error.replica == replica.name and error.unfinished and not replica.busy
    keys = lambda images: [(i.prompt_index, i.image_index) for i in images]
    assert keys(delivered) == [(t.prompt_index, t.image_index) for t in tasks[:MAX_BATCH]]
    assert error.unfinished == list(range(MAX_BATCH, len(tasks))) and error.tasks == tasks[MAX_BATCH:]
    assert replica.state != READY and replica.counts.restarts == 1 and good.restarts == 1
    assert len(good.ready()) == 1                      # the other one goes on serving

    good.wait_ready(2, timeout=300)                    # Ray Serve started another process
    assert replica.state == READY and replica.pid != old_pid
    assert any(f"replica {replica.name} ready" in line and "restart" in line for line in lines)
    remade, _events = collect(replica.run(error.tasks, SETTINGS))
    expected = reference(pipe, tasks)
    same_images(delivered, expected[:MAX_BATCH])
    same_images(remade, expected[MAX_BATCH:])


def test_a_replica_that_cannot_load_its_model_is_reported_and_the_others_serve(pools, pipe):
    good, bad, lines, _model = pools
    with pytest.raises(NoReplicaReady, match="no-such-model"):
        bad.wait_ready(1, timeout=300)
    (failed,) = bad.replicas
    assert failed.state == FAILED and "no-such-model" in failed.info()["last_error"]
    assert any("failed to start" in line and "no-such-model" in line for line in lines)
    tasks = tasks_of(["a small boat"], 1, seed=3)
    images, _events = collect(good.idle()[0].run(tasks, SETTINGS))
    same_images(images, reference(pipe, tasks))


def test_a_front_can_use_replicas_that_someone_else_deployed(pools):
    from ray import serve

    from nbkit.server.replicas.deployment import app
    from nbkit.server.replicas.ray_pool import PoolConfig, RayPool

    good, _bad, _lines, model = pools
    attached = RayPool(PoolConfig(1, model, deploy=False), lambda line: None)
    try:
        ready = attached.wait_ready(2, timeout=120)
        assert [r.name for r in attached.replicas] == ["replica-0", "replica-1"]
        assert sorted(r.pid for r in ready) == sorted(r.pid for r in good.replicas)
    finally:
        attached.stop()
    assert {"nbkit-replica-0", "nbkit-replica-1"} <= set(serve.status().applications)   # left running
    with pytest.raises(ValueError, match="Unknown replica arguments"):
        app({"model": DALLEBART, "modle": "mega"})


def test_metrics_are_exposed_in_the_prometheus_text_format():
    from prometheus_client.parser import text_string_to_metric_families

    from nbkit.server.metrics import ServerMetrics

    waiting = [3]
    metrics = ServerMetrics(queue_length=lambda: waiting[0], replicas_ready=lambda: 2)
    other = ServerMetrics()                       # its own registry: nothing shared, no clash
    metrics.image_made("replica-0", 4)
    metrics.image_made("replica-1")
    metrics.batch_done("replica-0", 0.7)
    metrics.first_preview_after(0.3)
    metrics.queue_full()
    metrics.replica_restarted("replica-1")
    waiting[0] = 5
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics.exposition().decode())
               for s in family.samples}
    assert samples[("nbkit_queue_jobs", ())] == 5 and samples[("nbkit_replicas_ready", ())] == 2
    assert samples[("nbkit_images_total", (("replica", "replica-0"),))] == 4
    assert samples[("nbkit_images_total", (("replica", "replica-1"),))] == 1
    assert samples[("nbkit_batch_seconds_count", (("replica", "replica-0"),))] == 1
    assert samples[("nbkit_batch_seconds_bucket", (("le", "0.5"), ("replica", "replica-0")))] == 0
    assert samples[("nbkit_batch_seconds_bucket", (("le", "1.0"), ("replica", "replica-0")))] == 1
    assert samples[("nbkit_first_preview_seconds_sum", ())] == pytest.approx(0.3)
    assert samples[("nbkit_refused_full_queue_total", ())] == 1
    assert samples[("nbkit_replica_restarts_total", (("replica", "replica-1"),))] == 1
    assert b"nbkit_images_total{" not in other.exposition()
