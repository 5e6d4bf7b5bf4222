"""Real-ESRGAN in Flax against the reference architecture's outputs, and the torch-free, code-free
reading of .pth / .safetensors files."""

import io
import os
import pickle
import shutil
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REFERENCE_ATOL, golden_folder, golden_params

from nbkit.generation.upscale import Upscaler
from nbkit.models.esrgan import (
    RRDBNetConfig,
    SRVGGConfig,
    UnknownArchitectureError,
    config_from_shapes,
    pixel_shuffle,
    pixel_unshuffle,
)
from nbkit.weights.checkpoint import CheckpointError
from nbkit.weights.loaders import load_esrgan
from nbkit.weights.torch_files import UnsafeCheckpointError, read_state_dict

WEIGHT_FILES = ("model.pth", "model_legacy.pth", "model.safetensors")


def _raw(model, params, pixels_uint8):
    return np.asarray(model.apply({"params": params}, pixels_uint8[None].astype(np.float32) / 255))[0]


@pytest.mark.golden
@pytest.mark.parametrize("weights", WEIGHT_FILES)
@pytest.mark.parametrize("folder", golden_params("esrgan"))
def test_upscaled_pixels_match_the_reference(folder, weights):
    expected = np.load(folder / "expected.npz")
    model, params = load_esrgan(folder / weights, jnp.float32)
    upscaler = Upscaler(folder / weights, dtype=jnp.float32)
    for i in range(2):
        raw = _raw(model, params, expected[f"input_{i}"])
        assert raw.shape == expected[f"output_{i}"].shape
        np.testing.assert_allclose(raw, expected[f"output_{i}"], atol=REFERENCE_ATOL, rtol=0)
        saved = upscaler.upscale([expected[f"input_{i}"]])[0]   # the library path: windows, uint8
        assert saved.shape == expected[f"output_uint8_{i}"].shape and saved.dtype == np.uint8
        assert np.abs(saved.astype(int) - expected[f"output_uint8_{i}"]).max() <= 1


@pytest.mark.golden
@pytest.mark.parametrize("weights", WEIGHT_FILES)
@pytest.mark.parametrize("folder", golden_params("esrgan"))
def test_a_corrupted_copy_fails(folder, weights, tmp_path):
    """Flipped bytes in the middle: the zip's CRC, safetensors' header or, in the legacy stream (which
    has no checksum), the numbers themselves give it away; a truncated copy is refused outright."""
    expected = np.load(folder / "expected.npz")
    data = bytearray((folder / weights).read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(255 - b for b in data[middle:middle + 64])
    corrupted = tmp_path / weights
    corrupted.write_bytes(bytes(data))
    try:
        model, params = load_esrgan(corrupted, jnp.float32)
    except CheckpointError as error:
        assert "\n" not in str(error)
    else:
        raw = _raw(model, params, expected["input_0"])
        assert not np.allclose(raw, expected["output_0"], atol=REFERENCE_ATOL, rtol=0)
    truncated = tmp_path / ("cut-" + weights)
    truncated.write_bytes((folder / weights).read_bytes()[: middle])
    with pytest.raises(CheckpointError):
        load_esrgan(truncated)


def test_the_three_formats_hold_the_same_tensors():
    folder = golden_folder("esrgan")
    dicts = [read_state_dict(folder / name) for name in WEIGHT_FILES]
    assert dicts[0].keys() == dicts[1].keys() == dicts[2].keys()
    for name in dicts[0]:
        assert dicts[0][name].dtype == np.float32
        np.testing.assert_array_equal(dicts[0][name], dicts[1][name])
        np.testing.assert_array_equal(dicts[0][name], dicts[2][name])


class _RunsCode:
    """Pickles as a call of os.system: what a crafted checkpoint would hold."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Evaluates:
    def __init__(self, expression):
        self.expression = expression

    def __reduce__(self):
        return eval, (self.expression,)


@pytest.mark.parametrize("layout", ["zip", "legacy", "inside a state dict"])
def test_a_pth_that_would_run_code_is_refused_without_running_it(tmp_path, layout):
    sentinel = tmp_path / "ran"
    payload = _RunsCode(f"touch {sentinel}")
    path = tmp_path / "evil.pth"
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
            archive.writestr("archive/byteorder", "little")
    elif layout == "legacy":
        stream = io.BytesIO()
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, stream, protocol=2)
        pickle.dump(payload, stream, protocol=2)
        path.write_bytes(stream.getvalue())
    else:
        with zipfile.ZipFile(path, "w") as archive:
            state = {"params_ema": {"conv_first.weight": _Evaluates(f"open({str(sentinel)!r}, 'w')")}}
            archive.writestr("archive/data.pkl", pickle.dumps(state, protocol=2))
    refused = r"(posix|os|builtins|__builtin__)\.(system|eval)"
    with pytest.raises(UnsafeCheckpointError, match=refused) as error:
        read_state_dict(path)
    assert "\n" not in str(error.value) and "Nothing from it was run" in str(error.value)
    assert not sentinel.exists()


def test_files_of_other_architectures_are_refused_naming_what_they_hold(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": np.zeros((4, 3, 3, 3), np.float32), "head.bias": np.zeros(4, np.float32)},
              str(path))
    found = r"neither of Real-ESRGAN's.*2 tensor\(s\): encoder\.weight"
    with pytest.raises(UnknownArchitectureError, match=found):
        load_esrgan(path)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        path = tmp_path / "text.pth"
        path.write_text("hello")
        read_state_dict(path)


def test_hyperparameters_are_read_from_the_published_shapes():
    """The four released files' shapes (from the architectures' definitions) give back their configs."""
    def rrdb(feat, blocks, grow, in_ch):
        shapes = {"conv_first.weight": (feat, in_ch, 3, 3), "conv_last.weight": (3, feat, 3, 3)}
        for b in range(blocks):
            shapes[f"body.{b}.rdb1.conv1.weight"] = (grow, feat, 3, 3)
        return shapes

    assert config_from_shapes(rrdb(64, 23, 32, 3)) == RRDBNetConfig(64, 23, 32, 4)
    assert config_from_shapes(rrdb(64, 6, 32, 3)) == RRDBNetConfig(64, 6, 32, 4)
    assert config_from_shapes(rrdb(64, 23, 32, 12)) == RRDBNetConfig(64, 23, 32, 2)
    compact = {"body.0.weight": (64, 3, 3, 3)}
    for i in range(32):
        compact[f"body.{2 * i + 1}.weight"] = (64,)
        compact[f"body.{2 * i + 2}.weight"] = (64, 64, 3, 3)
    compact["body.65.weight"] = (64,)
    compact["body.66.weight"] = (48, 64, 3, 3)
    assert config_from_shapes(compact) == SRVGGConfig(64, 32, 4)
    del compact["body.65.weight"]
    with pytest.raises(UnknownArchitectureError, match="without PReLU"):
        config_from_shapes(compact)


def test_pixel_unshuffle_is_the_inverse_of_pixel_shuffle_in_torchs_channel_order():
    x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    packed = np.asarray(pixel_unshuffle(x, 2))
    assert packed.shape == (2, 2, 3, 12)
    # torch orders the unshuffled channels (channel, row offset, column offset)
    first = [x[0, 0, 0, 0], x[0, 0, 1, 0], x[0, 1, 0, 0], x[0, 1, 1, 0]]
    np.testing.assert_array_equal(packed[0, 0, 0, 0:4], first)
    np.testing.assert_array_equal(np.asarray(pixel_shuffle(packed, 2)), x)


def test_a_folder_with_one_weights_file_is_an_upscaler(tmp_path):
    from nbkit.weights import hub

    folder = golden_folder("esrgan")
    shutil.copy(folder / "model.safetensors", tmp_path)
    assert hub.fetch_upscaler(tmp_path) == tmp_path / "model.safetensors"
    shutil.copy(folder / "model.pth", tmp_path)
    with pytest.raises(hub.ModelUnavailableError, match="holds 2 upscaler weight files"):
        hub.fetch_upscaler(tmp_path)
