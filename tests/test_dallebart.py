import json
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import golden_folders, golden_params
from flax import serialization
from flax.traverse_util import flatten_dict, unflatten_dict

from nbkit.models.dallebart import (
    PUBLISHED_ARCHITECTURES,
    DalleBart,
    DalleBartConfig,
    param_shapes,
)
from nbkit.weights.checkpoint import CheckpointError, read_msgpack
from nbkit.weights.loaders import load_dallebart


def run_reference_inputs(folder, dtype=jnp.float32):
    expected = np.load(folder / "expected.npz", allow_pickle=True)
    model, params = load_dallebart(folder, dtype)
    variables = {"params": params}
    encoded = model.apply(variables, expected["input_ids"], expected["attention_mask"], method=DalleBart.encode)
    logits = model.apply(variables, expected["input_ids"], expected["attention_mask"], expected["decoder_input_ids"])
    return expected, encoded, logits


@pytest.mark.golden
@pytest.mark.parametrize("folder", golden_params("dallebart"))
def test_encoder_and_logits_match_the_reference_in_float32(folder):
    expected, encoded, logits = run_reference_inputs(folder)
    assert encoded.shape == expected["encoder_last_hidden_state"].shape
    assert logits.shape == expected["logits"].shape
    np.testing.assert_allclose(encoded, expected["encoder_last_hidden_state"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits, expected["logits"], atol=1e-4, rtol=0)


@pytest.mark.golden
@pytest.mark.parametrize("folder", golden_params("dallebart"))
def test_checkpoint_holds_exactly_the_parameters_the_model_uses(folder):
    """Whatever its layout, every stored tensor is used and every used tensor is stored."""
    stored = read_msgpack(folder / "flax_model.msgpack")
    model, params = load_dallebart(folder)
    n_stored = sum(v.size for v in stored.values())
    n_loaded = sum(v.size for v in jax.tree_util.tree_leaves(params))
    assert n_loaded == n_stored
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize("dtype, tolerance", [(jnp.bfloat16, 0.1), (jnp.float16, 0.02)])
def test_half_precision_compute_stays_close(dtype, tolerance):
    folder = golden_folders("dallebart")[0]
    expected, encoded, logits = run_reference_inputs(folder, dtype)
    assert logits.dtype == jnp.float32  # logits are always handed to sampling in float32
    assert jnp.all(jnp.isfinite(logits))
    assert float(jnp.max(jnp.abs(logits - expected["logits"]))) < tolerance


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
    folder = golden_folders("dallebart")[0]
    stored = read_msgpack(folder / "flax_model.msgpack")
    shutil.copytree(folder, tmp_path / "m")
    (tmp_path / "m" / "flax_model.msgpack").write_bytes(
        serialization.msgpack_serialize(unflatten_dict(other_layout(stored))))
    _, params = load_dallebart(folder)
    _, reloaded = load_dallebart(tmp_path / "m")
    assert flatten_dict(params).keys() == flatten_dict(reloaded).keys()
    for key, value in flatten_dict(params).items():
        np.testing.assert_array_equal(value, flatten_dict(reloaded)[key], err_msg="/".join(key))


def test_a_layer_without_norm_scale_computes_with_scale_one(tmp_path):
    """The reference's per-layer files leave some last-layer norm scales out."""
    folder = golden_folders("dallebart")[0]
    stored = read_msgpack(folder / "flax_model.msgpack")
    per_layer = stored if not any(p.endswith("Layers") for k in stored for p in k) else other_layout(stored)
    last = max(int(p.rsplit("_", 1)[1]) for k in per_layer for p in k if re.fullmatch(r"\w+Layer_\d+", p))
    dropped = {k: v for k, v in per_layer.items() if not (k[-1] == "scale" and f"Layer_{last}" in "/".join(k))}
    assert len(dropped) < len(per_layer)
    shutil.copytree(folder, tmp_path / "m")
    (tmp_path / "m" / "flax_model.msgpack").write_bytes(serialization.msgpack_serialize(unflatten_dict(dropped)))
    _, params = load_dallebart(tmp_path / "m")
    scales = [v for k, v in flatten_dict(params).items() if k[-1] == "scale" and f"layers_{last}" in k]
    assert scales and all(np.all(np.asarray(v) == 1.0) for v in scales)


@pytest.fixture
def model_copy(tmp_path):
    folder = golden_folders("dallebart")[0]
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
    """DALL·E Mega's config.json (as published) gives its known size: about 2.6 B parameters."""
    mega = PUBLISHED_ARCHITECTURES["mega"]
    shapes = param_shapes(DalleBart(mega))
    count = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))
    assert 2.5e9 < count < 2.7e9
    assert mega.decoder_start_token_id == 16415 and mega.decoder_vocab_size == 16416
