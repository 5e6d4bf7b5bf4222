"""The Pipeline on the tiny fixture models: results, keys, one batch shape, compile-once, progress, stop,
devices."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import DALLEBART, ROOT, TESTS, VQGAN, assert_pixels_within_one_level, tiny_pipeline

from nbkit.generation.batches import image_keys, padded_size
from nbkit.generation.events import Batch, Done, Progress
from nbkit.generation.pipeline import Pipeline
from nbkit.generation.request import GenerationRequest, ImageTask
from nbkit.generation.sampling import SamplingSettings

PROMPTS = ["a red cube", "an avocado armchair", "sunset over a lake"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


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
    assert len(generation.for_prompt(1)) == 3
    again = pipe.generate(PROMPTS[:2], n_images=3, seed=11)
    assert tokens_of(again) == tokens_of(generation)
    assert tokens_of(pipe.generate(PROMPTS[:2], n_images=3, seed=12)) != tokens_of(generation)
    random_seed = pipe.generate(PROMPTS[:1])
    assert isinstance(random_seed.seed, int) and random_seed.images[0].seed == random_seed.seed


def test_an_image_depends_on_seed_prompt_index_and_image_index_only(pipe):
    """The other rows of the batch and the image's row in it do not change an image (in float32 neither does
    another max_batch: the shape matters in half precision, see tests/test_reproduce_dtypes.py)."""
    together = tokens_of(pipe.generate(PROMPTS, n_images=2, seed=5))           # 6 rows: batches 4 + 2
    small = Pipeline(pipe.model, pipe.params, pipe.tokenizer, pipe.vqgan, pipe.vqgan_params, pipe.mesh,
                     max_batch=1)
    one_by_one = tokens_of(small.generate(PROMPTS, n_images=2, seed=5))
    assert one_by_one == together
    keys = image_keys(5, np.array([0, 0, 2]), np.array([0, 1, 1]))
    assert keys.shape == (3, 2) and len({k.tobytes() for k in keys}) == 3
    assert (image_keys(5, np.array([2]), np.array([1]))[0] == keys[2]).all()


def test_every_batch_runs_in_one_shape_that_each_image_records(pipe):
    """Batches are padded to max_batch rows (a multiple of the data-parallel devices), whatever their count:
    each image records that size and its row, for `reproduce` (see `Pipeline.make_again`)."""
    assert [padded_size(rows, 1) for rows in (0, 1, 3)] == [1, 1, 3]
    assert [padded_size(rows, 8) for rows in (1, 8, 9)] == [8, 8, 16]
    generation = pipe.generate(PROMPTS, n_images=2, seed=5)                    # 6 images: 4, then 2 of 4
    assert pipe.max_batch == 4
    assert [(i.batch_size, i.batch_row) for i in generation.images] == [(4, r) for r in (0, 1, 2, 3, 0, 1)]
    lone = pipe.generate(PROMPTS[:1], seed=5).images[0]
    assert (lone.batch_size, lone.batch_row) == (4, 0)
    again = pipe.make_again(ImageTask(PROMPTS[0], 5, 0, 0), SamplingSettings(), 4, 2)
    assert again.tokens.tolist() == lone.tokens.tolist() and (again.batch_size, again.batch_row) == (4, 2)
    with pytest.raises(ValueError, match="outside a batch of 4"):
        pipe.make_again(ImageTask(PROMPTS[0], 5, 0, 0), SamplingSettings(), 4, 4)


def test_any_number_of_images_new_prompts_seed_and_settings_do_not_recompile(pipe, count_compilations):
    pipe.generate(PROMPTS, n_images=1, seed=1)                                  # 3 rows → padded to 4
    pipe.generate(PROMPTS, n_images=1, seed=1, condition_scale=1.0)             # its own, half-size program
    list(pipe.stream(GenerationRequest(PROMPTS, 1, 1), progress_every=128))    # the progress snapshot's copy
    with count_compilations() as counter:
        pipe.generate(["one", "two", "three", "four"], n_images=1, seed=2, temperature=0.7, top_k=5,
                      top_p=0.9, condition_scale=3.0)
        pipe.generate(["just one prompt"], n_images=4, seed=3, condition_scale=1.0)
        list(pipe.stream(GenerationRequest(PROMPTS, 1, 4), progress_every=50))
        pipe.generate(["one image"], n_images=1, seed=4)                         # one shape for 1, 2, 4, 6
        pipe.generate(["two images"], n_images=2, seed=4)
        pipe.generate(PROMPTS, n_images=2, seed=4)
    assert counter.count == 0


def test_the_stream_yields_progress_then_the_batch_then_done_and_changes_nothing(pipe):
    plain = pipe.generate(PROMPTS[:1], n_images=2, seed=3)
    events = list(pipe.stream(GenerationRequest(PROMPTS[:1], 2, 3), progress_every=64))
    assert [type(e) for e in events] == [Progress] * 5 + [Batch, Done]
    assert [e.stage for e in events[:5]] == ["drawing"] * 4 + ["decoding"]    # compiled by `plain`
    events = events[:4] + events[5:]
    progress = events[:4]
    assert [(p.position, p.tokens_done, p.tokens_total, p.images_done) for p in progress] == [
        (0, 0, 512, 0), (65, 2 * 65, 512, 0), (129, 2 * 129, 512, 0), (193, 2 * 193, 512, 0)]
    assert progress[0].images == [] and all(len(p.images) == 2 for p in progress[1:])
    batch = events[4]
    assert (batch.images_done, batch.images_total) == (2, 2)
    assert tokens_of(batch) == tokens_of(plain)
    assert all((a.pixels == b.pixels).all() for a, b in zip(batch.images, plain.images, strict=True))
    partial = progress[1].images[0].tokens
    assert (partial[:65] == plain.images[0].tokens[:65]).all() and not partial[65:].any()
    assert events[5].images_total == 2 and events[5].timings["total"] >= events[5].timings["tokens"] > 0


def test_progress_images_read_late_are_still_their_own_batch(pipe):
    """Reading a Progress's images after the next batch has started decodes the rows it was made for."""
    small = Pipeline(pipe.model, pipe.params, pipe.tokenizer, pipe.vqgan, pipe.vqgan_params, pipe.mesh,
                     max_batch=2)
    events = list(small.stream(GenerationRequest(PROMPTS, 1, 8), progress_every=100))
    first_batch_progress = [e for e in events if isinstance(e, Progress) and e.position == 101][0]
    finished = {(i.prompt_index, i.image_index): i.tokens
                for e in events if isinstance(e, Batch) for i in e.images}
    late = first_batch_progress.images                                      # read after the whole stream
    assert [(i.prompt_index, i.image_index) for i in late] == [(0, 0), (1, 0)]
    for image in late:
        assert (image.tokens[:101] == finished[(image.prompt_index, image.image_index)][:101]).all()


def test_leaving_the_loop_stops_and_keeps_the_finished_batches(pipe):
    small = Pipeline(pipe.model, pipe.params, pipe.tokenizer, pipe.vqgan, pipe.vqgan_params, pipe.mesh,
                     max_batch=2)
    kept, stream = [], small.stream(GenerationRequest(PROMPTS, 2, 4), progress_every=32)
    for event in stream:
        if isinstance(event, Batch):
            kept += event.images
        if isinstance(event, Progress) and event.images_done == 2 and event.position >= 64:
            break                                               # Stop, part way through the second batch
    assert [(i.prompt_index, i.image_index) for i in kept] == [(0, 0), (0, 1)]


def test_a_batch_follows_its_last_step_and_its_decoding_notice_at_once(pipe):
    """Only the batch's `decoding` notice comes between its last token and its images: a consumer that
    stops at a drawing event (never at a decoding one) still has every image whose tokens were drawn."""
    events = list(pipe.stream(GenerationRequest(PROMPTS[:1], 1, 5), progress_every=254))
    assert [type(e) for e in events] == [Progress, Progress, Progress, Batch, Done]
    assert events[1].position == 255 and events[1].stage == "drawing"   # then one step, then the images
    assert (events[2].stage, events[2].position, events[2].tokens_done) == ("decoding", 256, 256)
    assert len(events[3].images) == 1


def test_progress_names_each_stage_and_learns_an_eta_that_includes_the_decode(pipe):
    """compiling (a new batch size) → drawing → decoding; once a step and a decode were timed, the time
    left is a number and says that it includes the decode; the labels are the one vocabulary."""
    fresh = Pipeline(pipe.model, pipe.params, pipe.tokenizer, pipe.vqgan, pipe.vqgan_params, pipe.mesh,
                     max_batch=2)
    first = [e for e in fresh.stream(GenerationRequest(PROMPTS, 1, 3), progress_every=64)
             if isinstance(e, Progress)]
    assert first[0].stage == "compiling" and first[0].seconds_left is None
    assert first[0].label.startswith("compiling (first time for this size) · 0 of 3 images")
    assert {e.stage for e in first} == {"compiling", "drawing", "decoding"}
    second_batch = [e for e in first if e.images_done == 2]            # batch 2 (one row, padded to 2)
    assert second_batch[0].stage == "drawing"                         # the same shape: nothing compiles
    timed = [e for e in first if e.stage == "drawing" and e.images_done == 2 and e.seconds_left is not None]
    assert timed and all(e.decode_timed for e in timed)                # batch 1's decode was timed
    again = [e for e in fresh.stream(GenerationRequest(PROMPTS, 1, 4), progress_every=64)
             if isinstance(e, Progress)]
    assert "compiling" not in {e.stage for e in again}
    drawing = [e for e in again if e.stage == "drawing"]
    assert all(e.seconds_left is not None and e.decode_timed for e in drawing)
    lefts = [e.seconds_left for e in drawing if e.images_done == 0]
    assert len(lefts) >= 2 and all(left > 0 for left in lefts)   # that it shrinks: test_progress.py (the
    # step time is re-learned as the run goes, so on a busy host a real clock may not show it here)
    assert "about" in drawing[1].label and "decoding included" in drawing[1].label
    assert again[-1].label.startswith("decoding pixels · 2 of 3 images")


def test_prompts_longer_than_the_model_reads_are_named_once_without_the_padding_rows(pipe):
    long = "a very long prompt " * 40
    events = list(pipe.stream(GenerationRequest([long, "short", long], 1, 1)))     # 3 rows, padded to 4
    assert events[0].cut == (long,)                                     # once, not once per row
    assert all(e.cut == (long,) for e in events if isinstance(e, Progress))
    assert pipe.cut_prompts(["short"], ["also short"]) == ()
    assert pipe.cut_prompts(["short"], [long]) == (long,)


def test_a_request_is_checked_once_and_draws_its_seed_there(pipe):
    request = GenerationRequest(PROMPTS[:1])
    assert isinstance(request.seed, int) and 0 <= request.seed < 2**31
    assert request.images == [(0, 0)] and GenerationRequest(PROMPTS, 2, 1, only=[(2, 1)]).images == [(2, 1)]
    for bad, message in [({"n_images": 0}, "n_images"), ({"n_images": 1.5}, "n_images"),
                         ({"seed": -1}, "seed"), ({"seed": "7"}, "seed"), ({"seed": 2**32}, "seed"),
                         ({"only": [(3, 0)]}, "only=")]:
        with pytest.raises(ValueError, match=message):
            GenerationRequest(PROMPTS, **bad)
    with pytest.raises(TypeError, match="SamplingSettings"):
        GenerationRequest(PROMPTS, settings={"temperature": 1.0})
    with pytest.raises(ValueError, match="progress_every"):
        pipe.stream(request, progress_every=0)                 # checked before the first event is asked for
    with pytest.raises(TypeError, match="GenerationRequest"):
        pipe.stream(PROMPTS)


def test_bad_arguments_say_what_to_do(pipe):
    for bad, message in [({"n_images": 0}, "n_images"), ({"seed": -1}, "seed"),
                         ({"temperature": 0}, "temperature"), ({"top_p": 2}, "top_p")]:
        with pytest.raises(ValueError, match=message):
            pipe.generate(PROMPTS[:1], **bad)
    with pytest.raises(TypeError, match="Wrap it in a list"):
        pipe.generate("a bare string")
    with pytest.raises(ValueError, match="model_parallel"):
        Pipeline.from_pretrained(DALLEBART, VQGAN, model_parallel=3, progress=False)


@pytest.fixture(scope="module")
def seven(pipe):
    """What the other processes' runs (8 devices, two hosts) are compared with: made once."""
    return pipe.generate(PROMPTS, n_images=2, seed=7)


def test_same_tokens_on_1_and_8_devices_and_with_weights_split_over_a_model_axis(seven, eight_devices):
    """8 simulated CPU devices (the session's 8-device process, tests/eight_devices_run.py). The README's
    contract: the same tokens; pixels at most one level apart, in few values (the VQGAN's sums may run in
    another order on another layout)."""
    results, generation = eight_devices.results, seven
    here = [image.tokens.tolist() for image in generation.images]
    assert results["device_count"] == 8
    assert results["one"]["devices"] == 1 and results["one"]["batch_sizes"] == [4]
    assert results["data8"]["batch_sizes"] == [8]          # one shape, split over the 8 devices
    here_pixels = np.stack([image.pixels for image in generation.images])
    with np.load(eight_devices.folder / "pixels.npz") as pixels:
        for name in ("one", "data8", "model8", "data2_model4"):
            assert results[name]["tokens"] == here, name
            assert_pixels_within_one_level(pixels[name], here_pixels, name)
    assert results["model8"]["kernel_shard_rows"] == [results["model8"]["kernel_rows"] // 8]
    # Each device holds both halves (conditioned, unconditioned) of its own images: a sampling step moves
    # nothing between the data-parallel devices.
    assert results["data8"]["step_collectives"] == [], results["data8"]["step_collectives"]


def test_two_processes_generate_together_as_one_host_does(seven):
    """`jax.distributed.initialize()` over 127.0.0.1: two CPU processes, one device each."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    script = str(TESTS / "multihost_run.py")
    processes = [subprocess.Popen([sys.executable, script, str(rank), port, str(DALLEBART), str(VQGAN)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for rank in (0, 1)]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
    first, second = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert first["processes"] == 2 and first["devices"] == 2
    assert first["tokens"] == [image.tokens.tolist() for image in seven.images]
    assert first["unseeded_seed"] == second["unseeded_seed"]       # a drawn seed is shared by the hosts


def test_a_persistent_compilation_cache_is_used_by_the_next_session(tmp_path):
    script, env = str(TESTS / "compilation_cache_run.py"), {
        **os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("JAX_COMPILATION_CACHE_DIR")       # not the session's cache (conftest.py): a folder of its own
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, script, str(DALLEBART), str(VQGAN),
                              str(tmp_path / "jax-cache")],
                             env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0]["cache_hits"] == 0 and any((tmp_path / "jax-cache").iterdir())
    assert runs[1]["cache_hits"] >= 3                     # start, advance, the VQGAN decoder
    assert runs[1]["tokens"] == runs[0]["tokens"]


def test_a_negative_prompt_replaces_the_empty_prompt_and_an_empty_one_changes_nothing(pipe):
    plain = tokens_of(pipe.generate(PROMPTS[:2], n_images=2, seed=5))
    assert tokens_of(pipe.generate(PROMPTS[:2], n_images=2, seed=5, negative_prompt="")) == plain
    assert tokens_of(pipe.generate(PROMPTS[:2], n_images=2, seed=5, negative_prompt=["", ""])) == plain
    negative = tokens_of(pipe.generate(PROMPTS[:2], n_images=2, seed=5, negative_prompt="a blue sphere"))
    assert all(negative[key] != plain[key] for key in plain)
    only_first = tokens_of(pipe.generate(PROMPTS[:2], n_images=2, seed=5,
                                         negative_prompt=["a blue sphere", ""]))
    assert only_first[(0, 0)] == negative[(0, 0)] and only_first[(1, 0)] == plain[(1, 0)]
    tokenized = pipe.tokenizer(PROMPTS[:2], ["a blue sphere", ""])
    alone = pipe.tokenizer(["a blue sphere"])
    np.testing.assert_array_equal(tokenized.input_ids_uncond[0], alone.input_ids[0])
    np.testing.assert_array_equal(tokenized.input_ids_uncond[1], pipe.tokenizer(["x"]).input_ids_uncond[0])
    with pytest.raises(ValueError, match="negative_prompt must be one text, or one text per prompt"):
        GenerationRequest(PROMPTS, negative_prompt=["only one"])
