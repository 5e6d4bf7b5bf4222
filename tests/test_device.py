"""Device detection, the dtype policy, and the model picker that uses them."""

from __future__ import annotations

import pytest

from nbkit.generation import device as device_module
from nbkit.generation.device import DeviceInfo, detect, recommended_dtype
from nbkit.notebook.ui import ModelPicker, model_choices
from nbkit.weights.registry import GIB


def fake(platform="gpu", kind="Tesla T4", count=1, memory_gib=15.0, capability=None) -> DeviceInfo:
    return DeviceInfo(platform, kind, count, 1, int(memory_gib * GIB), 12 * GIB, True, capability)


@pytest.mark.parametrize("platform, kind, capability, expected", [
    ("tpu", "TPU v2", None, "bfloat16"),
    ("tpu", "TPU v5 lite", None, "bfloat16"),
    ("gpu", "Tesla T4", "7.5", "float16"),
    ("gpu", "Tesla T4", None, "float16"),
    ("gpu", "Tesla V100-SXM2-16GB", None, "float16"),
    ("gpu", "NVIDIA A100-SXM4-40GB", "8.0", "bfloat16"),
    ("gpu", "NVIDIA L4", None, "bfloat16"),
    ("gpu", "NVIDIA H100 80GB HBM3", "9.0", "bfloat16"),
    ("cpu", "cpu", None, "float32"),
])
def test_recommended_dtype(platform, kind, capability, expected):
    assert recommended_dtype(platform, kind, capability) == expected


def test_largest_model_that_fits():
    assert fake("gpu", "NVIDIA A100-SXM4-40GB", memory_gib=40).largest_model() == "mega"
    assert fake("gpu", "Tesla T4", memory_gib=15).largest_model() == "mega"        # float16: ~6.5 GiB
    assert fake("tpu", "TPU v2", count=8, memory_gib=8).largest_model() == "mega"  # bf16 fits one 8 GiB core
    assert fake("cpu", "cpu", memory_gib=4).largest_model() == "mini"               # float32: ~2.9 GiB
    assert fake("gpu", "Tesla T4", memory_gib=1).largest_model() is None
    small = fake("tpu", "TPU v2", count=8, memory_gib=4)
    assert not small.fits("mega") and small.fits("mega", sharded=True)


def test_detect_describes_this_machine():
    info = detect()
    assert info.platform == "cpu" and info.count >= 1 and info.recommended_dtype == "float32"
    assert info.memory_per_device > GIB and info.host_memory > GIB
    summary = info.summary()
    for part in ("devices:", "cpu", "float32", "host memory", "model:"):
        assert part in summary


def test_tpu_memory_falls_back_to_known_sizes(monkeypatch):
    class TPU:
        platform, device_kind = "tpu", "TPU v3"

        def memory_stats(self):
            return None

    assert device_module.device_memory(TPU()) == 16 * GIB


def test_model_picker_lists_sizes_and_fit_and_returns_the_choice():
    t4 = fake("gpu", "Tesla T4", memory_gib=15)
    choices = {choice.name: choice for choice in model_choices(t4)}
    assert set(choices) == {"mini", "mega", "mega-fp16"}
    assert all(choice.dtype == "float16" and choice.fits for choice in choices.values())
    assert choices["mega"].memory_bytes > 3 * choices["mini"].memory_bytes
    assert "10.4 GB download" in choices["mega"].label and "fits this device" in choices["mega"].label
    tiny = fake("cpu", "cpu", memory_gib=4)
    assert "too big" in {c.name: c for c in model_choices(tiny)}["mega"].label

    picker = ModelPicker(tiny)
    assert picker.value == "mini"                                  # the largest that fits
    assert [value for _, value in picker.widget.options] == ["mini", "mega", "mega-fp16"]
    picker.widget.value = "mega-fp16"
    assert picker.value == "mega-fp16"
