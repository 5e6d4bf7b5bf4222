import numpy as np
import pytest
from conftest import GOLDEN_DIR
from flax import serialization
from flax.traverse_util import flatten_dict

from nbkit.weights.checkpoint import CheckpointError, read_msgpack, stream_msgpack

CHECKPOINTS = sorted(GOLDEN_DIR.glob("*/flax_model.msgpack"))


@pytest.mark.golden
@pytest.mark.parametrize("path", CHECKPOINTS, ids=[p.parent.name for p in CHECKPOINTS])
def test_streaming_reader_reads_what_flax_wrote(path):
    reference = flatten_dict(serialization.msgpack_restore(path.read_bytes()))
    streamed = read_msgpack(path)
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
        read_msgpack(path)
