"""Starting from an image, on the tiny fixture models: what each edit keeps (pure), variations, extending,
filling a region, seamless grids, packing tasks of different requests, and saving/reproducing them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import CLIP, tiny_pipeline
from PIL import Image

from nbkit.generation.events import Batch
from nbkit.generation.from_image import Extend, Fill, SourceImage, Vary
from nbkit.generation.kept import KeptTokens
from nbkit.generation.pipeline import Pipeline
from nbkit.generation.request import GenerationRequest
from nbkit.generation.sampling import SamplingSettings
from nbkit.generation.specs import Generate
from nbkit.generation.token_grids import seamless_tokens, stitched_tokens, tokens_sha256
from nbkit.output.reproduction import reproduce
from nbkit.output.runs import save_run
from nbkit.png import read_png_metadata

GRID = np.arange(256).reshape(16, 16) % 64


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def made(pipe):
    """A generated image to start from."""
    return pipe.generate(["a red cube"], seed=3).images[0]


# ---- what each edit keeps (no model)


def test_first_rows_keeps_whole_rows_and_nothing_else():
    kept = KeptTokens.first_rows(GRID, 5)
    assert kept.mask.reshape(16, 16)[:5].all() and not kept.mask.reshape(16, 16)[5:].any()
    assert kept.tokens.reshape(16, 16)[:5].tolist() == GRID[:5].tolist() and kept.count == 80
    assert KeptTokens.first_rows(GRID, 0).count == 0 and KeptTokens.first_rows(GRID, 16).count == 256
    with pytest.raises(ValueError, match="keep_rows must be a whole number from 0 to 16"):
        KeptTokens.first_rows(GRID, 17)


def test_shifting_moves_the_grid_and_keeps_what_is_still_inside():
    down = KeptTokens.shifted(GRID, "down", 3)
    assert down.tokens.reshape(16, 16)[:13].tolist() == GRID[3:].tolist()
    assert down.mask.reshape(16, 16)[:13].all() and not down.mask.reshape(16, 16)[13:].any()
    right = KeptTokens.shifted(GRID, "right", 4)
    assert right.tokens.reshape(16, 16)[:, :12].tolist() == GRID[:, 4:].tolist()
    assert right.mask.reshape(16, 16)[:, :12].all() and not right.mask.reshape(16, 16)[:, 12:].any()
    for bad in (0, 16):
        with pytest.raises(ValueError, match="Extend by 1 to 15"):
            KeptTokens.shifted(GRID, "down", bad)
    with pytest.raises(ValueError, match="direction must be one of down, right"):
        KeptTokens.shifted(GRID, "up", 2)


def test_a_region_to_fill_is_the_only_part_not_kept_and_masks_survive_the_record():
    kept = KeptTokens.outside(GRID, 4, 5, 8, 11)
    mask = kept.mask.reshape(16, 16)
    assert not mask[4:8, 5:11].any() and mask.sum() == 256 - 4 * 6
    back = KeptTokens.from_record(GRID.reshape(-1), kept.mask_hex())
    assert back == kept and len(kept.mask_hex()) == 64
    with pytest.raises(ValueError, match="0 ≤ top < bottom ≤ 16"):
        KeptTokens.outside(GRID, 8, 0, 8, 4)


def test_seamless_and_stitched_grids_lay_tokens_side_by_side():
    grids = [np.full(256, value) for value in range(4)]
    whole = seamless_tokens(grids)
    assert whole.shape == (32, 32) and whole[0, 16] == 1 and whole[16, 0] == 2 and whole[31, 31] == 3
    assert seamless_tokens(grids, columns=4).shape == (16, 64)
    with pytest.raises(ValueError, match="multiple of columns"):
        seamless_tokens(grids[:3], columns=2)


@pytest.mark.parametrize("count", range(1, 18))
def test_the_default_seamless_layout_is_the_most_square_full_grid_for_any_count(count):
    grids = [np.full(256, value) for value in range(count)]
    rows, columns = (side // 16 for side in seamless_tokens(grids).shape)
    assert rows * columns == count and columns >= rows
    squarer = [c for c in range(1, count + 1) if count % c == 0 and c >= count // c]
    assert columns == min(squarer)                      # no full grid is squarer
    cells = seamless_tokens(grids).reshape(rows, 16, columns, 16)[:, 0, :, 0]
    assert cells.reshape(-1).tolist() == list(range(count))     # in reading order

def test_stitched_grids_lay_pieces_side_by_side():
    wide = stitched_tokens(GRID, [np.roll(GRID, 1), np.roll(GRID, 2)], "right", 4)
    assert wide.shape == (16, 24) and wide[:, 16:20].tolist() == np.roll(GRID, 1)[:, 12:].tolist()
    tall = stitched_tokens(GRID, [GRID + 1], "down", 5)
    assert tall.shape == (21, 16) and tall[16:].tolist() == (GRID + 1)[11:].tolist()


# ---- on the model


def test_variations_keep_the_first_rows_exactly_and_draw_the_rest(pipe, made):
    varied = pipe.vary(made, n_images=3, keep_rows=6, seed=9).images
    source = made.tokens.reshape(16, 16)
    for image in varied:
        assert image.tokens.reshape(16, 16)[:6].tolist() == source[:6].tolist()
        assert image.prompt == "a red cube"
    assert len({image.tokens[96:].tobytes() for image in varied}) == 3
    assert pipe.vary(made, n_images=1, keep_rows=16, seed=1).images[0].tokens.tolist() == made.tokens.tolist()
    fresh = pipe.generate(["a red cube"], n_images=2, seed=9)
    nothing_kept = pipe.vary(made, n_images=2, keep_rows=0, seed=9)
    assert [i.tokens.tolist() for i in nothing_kept.images] == [i.tokens.tolist() for i in fresh.images]


def test_keep_rows_and_masks_never_recompile(pipe, made, count_compilations):
    pipe.vary(made, n_images=2, keep_rows=4, seed=1)
    with count_compilations() as counter:
        for rows in (1, 9, 15):
            pipe.vary(made, n_images=2, keep_rows=rows, seed=rows)
        pipe.extend(made, "right", 5, n_images=2, seed=2)
        pipe.fill(made, (3, 3, 9, 9), n_images=2, seed=2)
    assert counter.count == 0


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_packing_tasks_of_different_requests_changes_no_image_in_any_dtype(pipe, made, dtype):
    """What the server relies on: an image's tokens depend on its own task only — also in half
    precision, where a kept prefix run step by step (beside a fresh task) would draw other tokens than
    the prefill that runs it alone."""
    packer = pipe if dtype == "float32" else tiny_pipeline(dtype=dtype)
    # Every batch, alone or packed, is of max_batch (4) tasks, so each half-precision pipeline compiles one
    # batch size (about 25 s each on 2 cores); requests of 8 tasks are packed into other batches than alone.
    plain = GenerationRequest(["an avocado armchair", "a blue sphere"], 4, seed=4)
    varied = GenerationRequest(["a red cube", "a red cube at night"], 4, seed=8,
                               kept=KeptTokens.first_rows(made.tokens, 7), negative_prompt="blue")
    filled = GenerationRequest(["a red cube"], 4, seed=5, kept=KeptTokens.outside(made.tokens, 9, 2, 12, 14))
    requests = (plain, varied, filled)
    alone = [image.tokens.tolist() for r in requests for image in packer.collect(r).images]
    every = [task for r in requests for task in r.tasks()]
    order = np.random.default_rng(0).permutation(len(every))        # the requests' tasks mixed up
    interleaved = [every[i] for i in order]
    events = list(packer.stream_tasks(interleaved, SamplingSettings()))
    batches = [e for e in events if isinstance(e, Batch)]
    assert {len(e.batch) for e in batches} == {packer.max_batch} == {4}
    together = {slot: image for e in batches for slot, image in zip(e.batch, e.images, strict=True)}
    assert sorted(together) == list(range(len(interleaved)))
    assert [together[slot].tokens.tolist() for slot in range(len(interleaved))] == [alone[i] for i in order]
    for e in batches:       # a batch holds one kept prefix: the prefill runs each task as it runs alone
        assert len({interleaved[slot].kept.count if interleaved[slot].kept else 0 for slot in e.batch}) == 1


def test_extending_keeps_the_shifted_picture_and_stitches_a_panorama(pipe, made):
    down = pipe.extend(made, "down", 4, seed=5).images[0]
    assert down.tokens.reshape(16, 16)[:12].tolist() == made.tokens.reshape(16, 16)[4:].tolist()
    right = pipe.extend(made, "right", 6, seed=5).images[0]
    assert right.tokens.reshape(16, 16)[:, :10].tolist() == made.tokens.reshape(16, 16)[:, 6:].tolist()
    panorama = pipe.decode_grid(stitched_tokens(made.tokens, [right.tokens], "right", 6))
    assert panorama.shape == (256, 352, 3) and panorama.dtype == np.uint8
    with pytest.raises(ValueError, match="Extend by 1 to 15"):
        pipe.extend(made, "down", 16)


def recomputed_kept_logprob(pipe: Pipeline, image, condition_scale: float = 10.0) -> float:
    """How likely the model finds the kept tokens it reaches after drawing some, recomputed apart from
    the sampler: one teacher-forced pass over the whole image (not its step-by-step loop), the mixed
    logits of super-conditioning, the positions the sampler scores (the first, and every kept one from
    the end of the kept prefix on)."""
    import jax

    config = pipe.model.config
    text = pipe.tokenizer([image.prompt], [image.negative_prompt])
    ids = np.concatenate([text.input_ids, text.input_ids_uncond])
    mask = np.concatenate([text.attention_mask, text.attention_mask_uncond])
    inputs = np.concatenate([[config.decoder_start_token_id], image.tokens[:-1]])[None].repeat(2, 0)
    logits = np.asarray(pipe.model.apply({"params": pipe.params}, ids, mask, inputs), np.float64)
    mixed = logits[1] + condition_scale * (logits[0] - logits[1])
    codes = np.arange(mixed.shape[-1])
    mixed[:, (codes == config.eos_token_id) | (codes >= pipe.vqgan.config.n_embed)] = -np.inf
    logprob = np.asarray(jax.nn.log_softmax(mixed, axis=-1))[np.arange(len(image.tokens)), image.tokens]
    kept = image.kept.mask
    prefix = int(np.cumprod(kept).sum())
    positions = np.arange(len(kept))
    return float(logprob[kept & ((positions == 0) | (positions >= max(prefix, 1)))].sum())


# the sampler sums ~200 float32 log-probabilities step by step, the recomputation in one pass
LOGPROB_RTOL = 1000 * float(np.finfo(np.float32).eps)


def test_an_interrupted_extension_chain_resumes_from_its_saved_pieces(pipe, made, tmp_path, monkeypatch):
    from nbkit.output.runs import save_run
    from nbkit.output.storage import RunFolder

    edit = Extend(direction="down", rows=5, seed=7, times=3)
    whole = save_run(pipe, edit, tmp_path / "whole", source=made)
    whole_pieces, whole_stitched = whole.pieces, whole.picture
    original, made_now = pipe.stream, []

    def interrupted_after_one_piece(request, progress_every=None):
        if made_now:
            raise KeyboardInterrupt
        made_now.append(sorted(request.only))
        return original(request, progress_every)

    monkeypatch.setattr(pipe, "stream", interrupted_after_one_piece)
    with pytest.raises(KeyboardInterrupt):
        save_run(pipe, edit, tmp_path / "cut", source=made)
    (cut,) = (tmp_path / "cut").iterdir()
    assert [e["image_index"] for e in RunFolder(cut).entries()] == [0]
    made_now.clear()
    monkeypatch.setattr(pipe, "stream", lambda request, every=None: made_now.append(sorted(request.only))
                        or original(request, every))
    resumed = save_run(pipe, edit, tmp_path / "cut", source=made)
    folder, pieces, stitched = resumed.folder, resumed.pieces, resumed.picture
    assert folder.path == cut and made_now == [[(0, 1)], [(0, 2)]]          # only the missing pieces
    assert resumed.already_saved == 1 and len(resumed.generation.images) == 2
    tokens = lambda path: read_png_metadata(path)["tokens"]
    assert [tokens(p) for p in pieces] == [tokens(p) for p in whole_pieces]
    previous, bands = made.tokens.reshape(16, 16), [made.tokens.reshape(16, 16)]
    for piece in pieces:            # each piece keeps the one before it, moved up by 5 rows
        grid = np.asarray(tokens(piece)).reshape(16, 16)
        assert grid[:11].tolist() == previous[5:].tolist()
        previous = grid
        bands.append(grid[11:])
    assert tokens(stitched) == tokens(whole_stitched) == np.concatenate(bands).reshape(-1).tolist()
    assert read_png_metadata(stitched)["grid_shape"] == [16 + 3 * 5, 16]


def test_filling_keeps_everything_outside_and_ranks_candidates_by_the_kept_tokens_after_it(pipe, made):
    filled = pipe.fill(made, (2, 4, 6, 12), n_images=4, seed=6).images
    mask = KeptTokens.outside(made.tokens, 2, 4, 6, 12).mask
    for image in filled:
        assert image.tokens[mask].tolist() == made.tokens[mask].tolist()
    recorded = np.array([image.kept_logprob for image in filled])
    recomputed = np.array([recomputed_kept_logprob(pipe, image) for image in filled])
    np.testing.assert_allclose(recorded, recomputed, rtol=LOGPROB_RTOL)
    assert (recomputed < 0).all() and len(set(recomputed.round(3))) == 4
    unsorted = pipe.edit(made, Fill(region=(2, 4, 6, 12), n_images=4, seed=6)).images
    by_recomputed = sorted(unsorted, key=lambda image: -recomputed_kept_logprob(pipe, image))
    assert [i.tokens.tolist() for i in filled] == [i.tokens.tolist() for i in by_recomputed]


def test_a_seamless_grid_is_decoded_as_one_picture(pipe):
    images = pipe.generate(["a red cube"], n_images=4, seed=2).images
    one = pipe.seamless(images[:1])
    # a 1×1 grid is the image itself, up to one level of the uint8 truncation (another batch size sums
    # the convolutions in another order)
    assert np.abs(one.astype(int) - images[0].pixels).max() <= 1
    whole = pipe.seamless(images)
    assert whole.shape == (512, 512, 3)
    tiled = np.concatenate([np.concatenate([i.pixels for i in images[r:r + 2]], axis=1) for r in (0, 2)])
    assert np.abs(whole.astype(int) - tiled).mean() > 1          # blended, not pasted side by side


def test_a_source_is_a_saved_png_exactly_or_any_image_encoded(pipe, made, tmp_path):
    run = save_run(pipe, Generate(prompts=["a red cube"], seed=3), tmp_path)
    saved = next(run.folder.path.glob("*_000.png"))
    source = pipe.source(saved)
    assert source.tokens.tolist() == made.tokens.tolist() and source.prompt == "a red cube"
    assert not source.encoded and "_encoder" not in pipe.__dict__     # the encoder is not loaded for it
    plain = tmp_path / "photo.jpg"
    Image.fromarray(made.pixels).save(plain)
    with pytest.raises(ValueError, match="its prompt is unknown: give one"):
        pipe.vary(plain, keep_rows=4)
    encoded = pipe.source(plain)
    assert encoded.encoded and encoded.tokens.shape == (256,) and encoded.prompt is None
    varied = pipe.vary(plain, n_images=1, keep_rows=4, seed=1, prompt="a cube").images[0]
    assert varied.tokens[:64].tolist() == encoded.tokens[:64].tolist() and varied.prompt == "a cube"


def test_a_saved_variation_records_its_source_and_is_reproduced(pipe, made, tmp_path):
    source = SourceImage(made.tokens, made.prompt, name="cube.png")
    request = Vary(n_images=2, keep_rows=5, seed=12, negative_prompt="fog").request(source)
    folder = save_run(pipe, request, tmp_path).folder
    pngs = sorted(p for p in folder.path.glob("*.png") if "grid" not in p.name)
    assert len(pngs) == 2
    metadata = read_png_metadata(pngs[1])
    assert metadata["source"] == {"file": "cube.png", "tokens_sha256": tokens_sha256(made.tokens),
                                  "encoded": False, "edit": "vary", "keep_rows": 5}
    assert metadata["negative_prompt"] == "fog" and len(metadata["kept_mask"]) == 64
    again = reproduce(pipe, pngs[1]).check()
    assert again.tokens.tolist() == metadata["tokens"]
    # the same request again reopens the folder; another source makes another run
    assert save_run(pipe, request, tmp_path).folder.path == folder.path
    other = dataclasses.replace(request, kept=KeptTokens.first_rows(made.tokens, 6))
    assert save_run(pipe, other, tmp_path).folder.path != folder.path


def test_kept_tokens_from_another_vqgan_are_refused(pipe):
    request = GenerationRequest(["x"], kept=KeptTokens.first_rows(np.full(256, 500), 2))
    with pytest.raises(ValueError, match="below 64 for this model"):
        pipe.collect(request)


def test_fill_with_clip_orders_the_better_half_by_clip_score(pipe, made):
    from nbkit.output.rerank import Reranker

    reranker = Reranker.from_folder(CLIP)
    plain = pipe.fill(made, (8, 0, 16, 16), n_images=4, seed=3).images
    ranked = pipe.fill(made, (8, 0, 16, 16), n_images=4, seed=3, reranker=reranker).images
    key = lambda image: image.tokens.tobytes()
    assert {key(i) for i in ranked[:2]} == {key(i) for i in plain[:2]}          # the better half stays first
    assert [key(i) for i in ranked[2:]] == [key(i) for i in plain[2:]]
    scores = reranker.scores([i.pixels for i in ranked[:2]], [i.prompt for i in ranked[:2]])
    assert scores[0] >= scores[1]
