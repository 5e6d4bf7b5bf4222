"""The Pipeline on the tiny fixture models: results, keys, buckets, compile-once, progress, stop, devices."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nbkit.generation.pipeline import Pipeline, bucket_sizes, image_keys

FIXTURES = Path(__file__).parent / "fixtures" / "golden"
DALLEBART, VQGAN = FIXTURES / "dallebart-tiny", FIXTURES / "vqgan-tiny"
PROMPTS = ["a red cube", "an avocado armchair", "sunset over a lake"]


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_pretrained(DALLEBART, VQGAN, dtype="float32", progress=False)


def tokens_of(generation):
    return {(image.prompt_index, image.image_index): image.tokens.tolist() for image in generation.images}


def test_generate_returns_images_with_their_prompts_seed_and_tokens(pipe):
    generation = pipe.generate(PROMPTS[:2], n_images=3, seed=11)
    assert [(i.prompt, i.prompt_index, i.image_index) for i in generation.images] == [
        (PROMPTS[p], p, i) for p in range(2) for i in range(3)]
    for image in generation.images:
        assert image.seed == 11 and image.tokens.shape == (256,) and image.pixels.shape == (256, 256, 3)
        assert image.pixels.dtype == np.uint8 and 0 <= image.tokens.min() and image.tokens.max() < 64
    assert len({image.tokens.tobytes() for image in generation.images}) == 6     # each image its own
    assert generation.timings["tokens"] > 0 and generation.timings["total"] >= generation.timings["tokens"]
    assert len(generation.for_prompt(1)) == 3 and not generation.stopped
    again = pipe.generate(PROMPTS[:2], n_images=3, seed=11)
    assert tokens_of(again) == tokens_of(generation)
    assert tokens_of(pipe.generate(PROMPTS[:2], n_images=3, seed=12)) != tokens_of(generation)
    random_seed = pipe.generate(PROMPTS[:1])
    assert isinstance(random_seed.seed, int) and random_seed.images[0].seed == random_seed.seed


def test_an_image_depends_on_seed_prompt_index_and_image_index_only(pipe):
    """Batch size, bucket, and the other rows of the batch do not change an image."""
    together = tokens_of(pipe.generate(PROMPTS, n_images=2, seed=5))           # 6 rows: batches 4 + 2
    small = Pipeline(pipe.model, pipe.params, pipe.tokenizer, pipe.vqgan, pipe.vqgan_params, pipe.mesh, max_batch=1)
    one_by_one = tokens_of(small.generate(PROMPTS, n_images=2, seed=5))
    assert one_by_one == together
    keys = image_keys(5, np.array([0, 0, 2]), np.array([0, 1, 1]))
    assert keys.shape == (3, 2) and len({k.tobytes() for k in keys}) == 3
    assert (image_keys(5, np.array([2]), np.array([1]))[0] == keys[2]).all()


def test_buckets_are_multiples_of_the_data_parallel_devices():
    assert bucket_sizes(1, 4) == [1, 2, 4]
    assert bucket_sizes(8, 32) == [8, 16, 32]
    assert bucket_sizes(8, 8) == [8]


def test_new_prompts_count_within_a_bucket_seed_and_settings_do_not_recompile(pipe, count_compilations):
    pipe.generate(PROMPTS, n_images=1, seed=1)                                  # 3 rows → bucket 4
    with count_compilations() as counter:
        pipe.generate(["one", "two", "three", "four"], n_images=1, seed=2, temperature=0.7, top_k=5,
                      top_p=0.9, condition_scale=3.0)
        pipe.generate(["just one prompt"], n_images=4, seed=3, condition_scale=1.0)
    assert counter.count == 0


def test_progress_reports_partial_then_final_images_and_changes_nothing(pipe):
    plain = pipe.generate(PROMPTS[:1], n_images=2, seed=3)
    seen = []
    watched = pipe.generate(PROMPTS[:1], n_images=2, seed=3, progress_every=64, on_progress=seen.append)
    assert [(p.tokens_done, p.final) for p in seen] == [(2 * 65, False), (2 * 129, False), (2 * 193, False),
                                                        (2 * 256, True)]
    assert all(len(p.images) == 2 and p.tokens_total == 512 for p in seen)
    assert tokens_of(watched) == tokens_of(plain)
    assert all((a.pixels == b.pixels).all() for a, b in zip(watched.images, plain.images))
    partial = seen[0].images[0].tokens
    assert (partial[:65] == plain.images[0].tokens[:65]).all() and not partial[65:].any()


def test_stop_keeps_the_finished_batches(pipe):
    small = Pipeline(pipe.model, pipe.params, pipe.tokenizer, pipe.vqgan, pipe.vqgan_params, pipe.mesh, max_batch=2)
    asked = []

    def stop_in_the_second_batch():
        asked.append(1)
        return len(asked) > 256 // 32          # the first batch takes 8 questions
    generation = small.generate(PROMPTS, n_images=2, seed=4, progress_every=32, should_stop=stop_in_the_second_batch)
    assert generation.stopped
    assert [(i.prompt_index, i.image_index) for i in generation.images] == [(0, 0), (0, 1)]


def test_bad_arguments_say_what_to_do(pipe):
    for bad, message in [({"n_images": 0}, "n_images"), ({"n_images": 1.5}, "n_images"), ({"seed": -1}, "seed"),
                         ({"seed": "7"}, "seed"), ({"temperature": 0}, "temperature"), ({"top_p": 2}, "top_p"),
                         ({"progress_every": 0}, "progress_every")]:
        with pytest.raises(ValueError, match=message):
            pipe.generate(PROMPTS[:1], **bad)
    with pytest.raises(TypeError, match="Wrap it in a list"):
        pipe.generate("a bare string")
    with pytest.raises(ValueError, match="model_parallel"):
        Pipeline.from_pretrained(DALLEBART, VQGAN, model_parallel=3, progress=False)


def test_same_tokens_on_1_and_8_devices_and_with_weights_split_over_a_model_axis(pipe):
    """8 simulated CPU devices (in a subprocess: the flag must precede jax's start)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "PYTHONPATH": str(Path(__file__).parent.parent)}
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "multidevice_run.py"), str(DALLEBART),
                          str(VQGAN)], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    here = [image.tokens.tolist() for image in pipe.generate(PROMPTS, n_images=2, seed=7).images]
    assert results["device_count"] == 8
    assert results["one"]["devices"] == 1 and results["data8"]["buckets"] == [8, 16, 32]
    for name in ("one", "data8", "model8", "data2_model4"):
        assert results[name]["tokens"] == here, name
        assert results[name]["pixels_sum"] == results["one"]["pixels_sum"], name
    assert results["model8"]["kernel_shard_rows"] == [results["model8"]["kernel_rows"] // 8]


def test_two_processes_generate_together_as_one_host_does(pipe):
    """`jax.distributed.initialize()` over 127.0.0.1: two CPU processes, one device each."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    env.pop("XLA_FLAGS", None)
    script = str(Path(__file__).parent / "multihost_run.py")
    processes = [subprocess.Popen([sys.executable, script, str(rank), port, str(DALLEBART), str(VQGAN)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    first, second = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert first["processes"] == 2 and first["devices"] == 2
    assert first["tokens"] == [image.tokens.tolist() for image in pipe.generate(PROMPTS, n_images=2, seed=7).images]
    assert first["unseeded_seed"] == second["unseeded_seed"]       # a drawn seed is shared by the hosts


def test_a_persistent_compilation_cache_is_used_by_the_next_session(tmp_path):
    script, env = str(Path(__file__).parent / "compilation_cache_run.py"), {
        **os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, script, str(DALLEBART), str(VQGAN), str(tmp_path / "jax-cache")],
                             env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0]["cache_hits"] == 0 and any((tmp_path / "jax-cache").iterdir())
    assert runs[1]["cache_hits"] >= 3                     # start, advance, the VQGAN decoder
    assert runs[1]["tokens"] == runs[0]["tokens"]
