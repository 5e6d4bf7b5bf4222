import json
import re
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    REFERENCE_ATOL,
    golden_folder,
    golden_folders,
    golden_params,
    max_magnitude,
    rounding_bound,
)
from flax import serialization
from flax.traverse_util import flatten_dict, unflatten_dict

from nbkit.models.dallebart import (
    PUBLISHED_ARCHITECTURES,
    DalleBart,
    DalleBartConfig,
    param_shapes,
)
from nbkit.weights.checkpoint import CheckpointError, stream_msgpack
from nbkit.weights.loaders import load_dallebart


def run_reference_inputs(folder, dtype=jnp.float32):
    expected = np.load(folder / "expected.npz", allow_pickle=True)
    model, params = load_dallebart(folder, dtype)
    variables = {"params": params}
    ids, mask = expected["input_ids"], expected["attention_mask"]
    encoded = model.apply(variables, ids, mask, method=DalleBart.encode)
    logits = model.apply(variables, ids, mask, expected["decoder_input_ids"])
    return expected, encoded, logits, params


@pytest.mark.golden
@pytest.mark.parametrize("folder", golden_params("dallebart"))
def test_encoder_and_logits_match_the_reference_in_float32(folder):
    expected, encoded, logits, _ = run_reference_inputs(folder)
    assert encoded.shape == expected["encoder_last_hidden_state"].shape
    assert logits.shape == expected["logits"].shape
    np.testing.assert_allclose(encoded, expected["encoder_last_hidden_state"], atol=REFERENCE_ATOL, rtol=0)
    np.testing.assert_allclose(logits, expected["logits"], atol=REFERENCE_ATOL, rtol=0)


@pytest.mark.golden
@pytest.mark.parametrize("folder", golden_params("dallebart"))
def test_checkpoint_holds_exactly_the_parameters_the_model_uses(folder):
    """Whatever its layout, every stored tensor is used and every used tensor is stored."""
    stored = dict(stream_msgpack(folder / "flax_model.msgpack"))
    model, params = load_dallebart(folder)
    n_stored = sum(v.size for v in stored.values())
    n_loaded = sum(v.size for v in jax.tree_util.tree_leaves(params))
    assert n_loaded == n_stored
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_stays_within_rounding_and_keeps_the_top_tokens_order(dtype):
    """Half precision strays from float32 by no more than its rounding allows (conftest.rounding_bound),
    so the top tokens keep their order wherever float32 sets them further apart than twice that."""
    folder = golden_folder("dallebart")
    expected, encoded, logits, params = run_reference_inputs(folder, dtype)
    assert logits.dtype == jnp.float32  # logits are always handed to sampling in float32
    reference, logits = expected["logits"], np.asarray(logits)
    hidden = expected["encoder_last_hidden_state"]
    hidden_bound = rounding_bound(dtype, params, max_magnitude(hidden))
    assert np.abs(np.asarray(encoded, np.float32) - hidden).max() <= hidden_bound
    bound = rounding_bound(dtype, params, max_magnitude(reference))
    assert np.abs(logits - reference).max() <= bound

    top = np.argsort(-reference, axis=-1)[..., :6]          # float32's six best tokens, best first
    top_logits = np.take_along_axis(reference, top, axis=-1)
    half_top = np.argsort(-logits, axis=-1)[..., :5]
    checked = 0
    for rank in range(5):   # where rank and rank + 1 are far apart, the best rank + 1 tokens are the same
        apart = top_logits[..., rank] - top_logits[..., rank + 1] > 2 * bound
        same = (np.sort(half_top[..., :rank + 1], axis=-1) == np.sort(top[..., :rank + 1], axis=-1)).all(-1)
        assert same[apart].all(), f"rank {rank}: {np.argwhere(apart & ~same)[:5]}"
        checked += int(apart.sum())
    assert checked >= reference.shape[0] * reference.shape[1] // 10, checked   # not an empty check


def other_layout(stored):
    """The same tensors in the other published layout: stacked <-> one sub-tree per layer."""
    stacked = any(part.endswith("Layers") for key in stored for part in key)
    converted, groups = {}, {}
    for key, value in stored.items():
        part = next((p for p in key if p.endswith("Layers") or re.fullmatch(r"\w+Layer_\d+", p)), None)
        if part is None:
            converted[key] = value
        elif stacked:
            at = key.index(part)
            for i in range(value.shape[0]):
                converted[key[:at] + (f"{part[:-1]}_{i}",) + key[at + 1:]] = value[i]
        else:
            at, (name, index) = key.index(part), part.rsplit("_", 1)
            groups.setdefault(key[:at] + (name + "s",) + key[at + 1:], {})[int(index)] = value
    for key, layers in groups.items():
        converted[key] = np.stack([layers[i] for i in sorted(layers)])
    return converted


def test_stacked_and_per_layer_files_load_to_the_same_tree(tmp_path):
    folder = golden_folder("dallebart")
    stored = dict(stream_msgpack(folder / "flax_model.msgpack"))
    shutil.copytree(folder, tmp_path / "m")
    (tmp_path / "m" / "flax_model.msgpack").write_bytes(
        serialization.msgpack_serialize(unflatten_dict(other_layout(stored))))
    _, params = load_dallebart(folder)
    _, reloaded = load_dallebart(tmp_path / "m")
    assert flatten_dict(params).keys() == flatten_dict(reloaded).keys()
    for key, value in flatten_dict(params).items():
        np.testing.assert_array_equal(value, flatten_dict(reloaded)[key], err_msg="/".join(key))


def test_a_layer_without_norm_scale_computes_with_scale_one_and_says_so(tmp_path):
    """The reference's per-layer files can leave last-layer norm scales out (the golden per-layer file
    happens to keep them all, so they are dropped here): scale 1, and one warning naming the norms."""
    folder = next(f for f in golden_folders("dallebart") if f.name.endswith("-unscanned"))
    per_layer = dict(stream_msgpack(folder / "flax_model.msgpack"))
    last = max(int(p.rsplit("_", 1)[1]) for k in per_layer for p in k if re.fullmatch(r"\w+Layer_\d+", p))
    dropped = {k: v for k, v in per_layer.items()
               if not (k[-1] == "scale" and f"Layer_{last}" in "/".join(k))}
    assert len(dropped) < len(per_layer)
    shutil.copytree(folder, tmp_path / "m")
    weights = serialization.msgpack_serialize(unflatten_dict(dropped))
    (tmp_path / "m" / "flax_model.msgpack").write_bytes(weights)
    with pytest.warns(UserWarning, match="stores no scale for the norm") as caught:
        _, params = load_dallebart(tmp_path / "m")
    scales = {k[:-1]: v for k, v in flatten_dict(params).items()
              if k[-1] == "scale" and f"layers_{last}" in k}
    assert scales and all(np.all(np.asarray(v) == 1.0) for v in scales.values())
    named = str(caught[0].message).split("norm(s) ")[1].split(":")[0].split(", ")
    assert len(caught) == 1 and sorted(named) == sorted("/".join(k) for k in scales)


@pytest.mark.golden
@pytest.mark.parametrize("folder", golden_params("dallebart"))
def test_published_layouts_load_without_a_warning(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dallebart(folder)


@pytest.fixture
def model_copy(tmp_path):
    folder = golden_folder("dallebart")
    return shutil.copytree(folder, tmp_path / "model")


def test_missing_weights_file_is_named(model_copy):
    (model_copy / "flax_model.msgpack").unlink()
    with pytest.raises(CheckpointError, match="flax_model.msgpack is missing"):
        load_dallebart(model_copy)


def test_truncated_weights_file_is_named(model_copy):
    path = model_copy / "flax_model.msgpack"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="flax_model.msgpack is damaged"):
        load_dallebart(model_copy)


def test_weights_from_another_architecture_are_refused(model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["d_model"] *= 2
    (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match its config.json"):
        load_dallebart(model_copy)


def test_missing_or_broken_config_is_named(model_copy):
    (model_copy / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_dallebart(model_copy)
    (model_copy / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_dallebart(model_copy)


def test_unsupported_variants_are_refused_by_name():
    with pytest.raises(ValueError, match="use_cosine_attention"):
        DalleBartConfig.from_dict({"use_cosine_attention": True})
    with pytest.raises(ValueError, match="ln_positions='swinv2'"):
        DalleBartConfig.from_dict({"ln_positions": "swinv2"})


def test_published_mega_config_builds_the_published_parameter_count():
    """DALL·E Mega's config.json (as published) gives its known size: its float32 weights file is
    "10.4 GB" on the hub (registry.py), 4 bytes a parameter plus under 1 MB of msgpack framing."""
    mega = PUBLISHED_ARCHITECTURES["mega"]
    shapes = param_shapes(DalleBart(mega))
    count = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))
    assert round(4 * count / 1e9, 1) == round((4 * count + (1 << 20)) / 1e9, 1) == 10.4
    assert mega.decoder_start_token_id == 16415 and mega.decoder_vocab_size == 16416
