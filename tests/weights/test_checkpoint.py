import warnings

import jax
import numpy as np
import pytest
from conftest import golden_params
from flax import serialization
from flax.traverse_util import flatten_dict

from nbkit.weights.checkpoint import CheckpointError, load_params, stream_msgpack

CHECKPOINTS = [param for kind in ("dallebart", "vqgan", "clip") for param in golden_params(kind)]


@pytest.mark.golden
@pytest.mark.parametrize("folder", CHECKPOINTS)
def test_streaming_reader_reads_what_flax_wrote(folder):
    path = folder / "flax_model.msgpack"
    reference = flatten_dict(serialization.msgpack_restore(path.read_bytes()))
    streamed = dict(stream_msgpack(path))
    assert streamed.keys() == reference.keys()
    for key, value in reference.items():
        assert streamed[key].dtype == value.dtype and streamed[key].shape == value.shape, key
        np.testing.assert_array_equal(streamed[key], value)


def test_tensors_arrive_one_at_a_time_in_file_order(tmp_path):
    tree = {"a": {"x": np.arange(6, dtype=np.float16).reshape(2, 3)}, "b": np.float32(2.5),
            "c": np.ones((), np.int32)}  # Flax writes keys sorted
    path = tmp_path / "flax_model.msgpack"
    path.write_bytes(serialization.msgpack_serialize(tree))
    stream = stream_msgpack(path)
    key, first = next(stream)
    assert key == ("a", "x") and first.dtype == np.float16 and first.tolist() == [[0, 1, 2], [3, 4, 5]]
    rest = dict(stream)
    assert rest == {("b",): np.float32(2.5), ("c",): 1}


@pytest.mark.parametrize("content, message", [
    (b"\x00" * 10, "is damaged"),
    (b"", "is damaged: it ends too early"),
])
def test_damaged_files_are_named(tmp_path, content, message):
    path = tmp_path / "flax_model.msgpack"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        dict(stream_msgpack(path))


def test_norms_without_a_stored_scale_get_scale_one_and_one_warning_naming_them(tmp_path):
    shape = jax.ShapeDtypeStruct((3,), np.float32)
    expected = {"layers_0": {"norm": {"scale": shape, "bias": shape}},
                "layers_1": {"norm": {"scale": shape, "bias": shape}, "final_norm": {"scale": shape}}}
    stored = {"layers_0": {"norm": {"scale": np.full(3, 2.0, np.float32), "bias": np.zeros(3, np.float32)}},
              "layers_1": {"norm": {"bias": np.ones(3, np.float32)}}}
    path = tmp_path / "flax_model.msgpack"
    path.write_bytes(serialization.msgpack_serialize(stored))
    with pytest.warns(UserWarning) as caught:
        params = load_params(path, expected, np.float32)
    assert len(caught) == 1                                    # one warning per load, naming every norm
    assert str(caught[0].message).startswith(f"{path} stores no scale for the norm(s) "
                                             "layers_1/norm, layers_1/final_norm: they compute with scale 1")
    for norm in ("norm", "final_norm"):
        assert params["layers_1"][norm]["scale"].tolist() == [1.0] * 3
    assert params["layers_0"]["norm"]["scale"].tolist() == [2.0] * 3
    path.write_bytes(serialization.msgpack_serialize(
        {**stored, "layers_1": {"norm": {"scale": np.ones(3, np.float32), "bias": np.ones(3, np.float32)},
                                "final_norm": {"scale": np.ones(3, np.float32)}}}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                         # a complete file loads without a word
        load_params(path, expected, np.float32)
