"""Device detection, the dtype policy, and the model picker that uses them."""

from __future__ import annotations

import jax
import pytest

from nbkit.generation import device as device_module
from nbkit.generation.device import DeviceInfo, detect, recommended_dtype
from nbkit.notebook.ui import ModelPicker, model_choices
from nbkit.weights import registry
from nbkit.weights.registry import GIB


def fake(platform="gpu", kind="Tesla T4", count=1, memory_gib=15.0, capability=None) -> DeviceInfo:
    memory = None if memory_gib is None else int(memory_gib * GIB)
    return DeviceInfo(platform, kind, count, 1, memory, 12 * GIB, True, capability)


class FakeDevice:
    """A jax device as far as `device_memory` looks: platform, kind, memory_stats."""

    def __init__(self, platform, kind, stats):
        self.platform, self.device_kind, self._stats = platform, kind, stats

    def memory_stats(self):
        if isinstance(self._stats, BaseException):
            raise self._stats
        return self._stats


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
    assert small.fits("mega") is False and small.fits("mega", sharded=True) is True


def test_detect_describes_this_machine(monkeypatch):
    """Whatever the machine (CPU, GPU or TPU), what detect() says agrees with jax."""
    free = device_module.available_memory()
    assert free is None or 0 < free <= device_module.host_memory()
    monkeypatch.setattr(device_module, "available_memory", lambda: free)   # one measurement for all
    devices = jax.devices()
    info = detect()
    first = devices[0]
    assert (info.platform, info.kind, info.count) == (first.platform, first.device_kind, len(devices))
    assert info.processes == jax.process_count()
    assert info.recommended_dtype == recommended_dtype(info.platform, info.kind, info.compute_capability)
    assert info.memory_per_device == device_module.device_memory(first)
    assert info.host_memory == device_module.host_memory() > GIB
    if info.platform == "cpu":                       # the memory free now, where it is measured
        assert info.memory_per_device == (free or info.host_memory)
    summary = info.summary()
    for part in ("devices:", f"{info.count} × {info.kind} ({info.platform})", info.recommended_dtype,
                 "host memory", "model:"):
        assert part in summary, part


def test_tpu_memory_falls_back_to_known_sizes():
    assert device_module.device_memory(FakeDevice("tpu", "TPU v3", None)) == 16 * GIB
    assert device_module.device_memory(FakeDevice("tpu", "TPU v5 lite", RuntimeError("no stats"))) == 16 * GIB
    assert device_module.device_memory(FakeDevice("tpu", "TPU v99", None)) is None    # unknown kind: no guess
    assert device_module.device_memory(FakeDevice("tpu", "TPU v2", {"bytes_limit": 7 * GIB})) == 7 * GIB


@pytest.mark.parametrize("stats", [None, {}, RuntimeError("memory_stats not supported"), {"bytes_limit": 0}])
def test_a_gpu_without_memory_stats_has_unknown_memory_not_the_hosts(stats):
    assert device_module.device_memory(FakeDevice("gpu", "Tesla T4", stats)) is None
    assert device_module.device_memory(FakeDevice("gpu", "Tesla T4", {"bytes_limit": 14 * GIB})) == 14 * GIB
    host = device_module.host_memory()
    assert device_module.device_memory(FakeDevice("cpu", "cpu", stats)) in range(1, host + 1)


def test_unknown_memory_gives_no_verdict_rather_than_a_guess():
    unknown = fake("gpu", "Tesla T4", memory_gib=None)
    assert unknown.fits("mini") is None and unknown.fits("mega", sharded=True) is None
    assert unknown.largest_model() is None
    summary = unknown.summary()
    assert "1 × Tesla T4 (gpu), memory unknown" in summary and "model:        unknown" in summary
    assert "GiB each" not in summary and "none of the named models fits" not in summary


def test_model_picker_lists_sizes_and_fit_and_returns_the_choice():
    t4 = fake("gpu", "Tesla T4", memory_gib=15)
    choices = {choice.name: choice for choice in model_choices(t4)}
    assert set(choices) == {"mini", "mega", "mega-fp16"}
    assert all(choice.dtype == "float16" and choice.fits for choice in choices.values())
    vqgan = registry.memory_needed(registry.MODELS["vqgan"], "float16")
    for name, choice in choices.items():      # the model and the VQGAN, both in float16
        assert choice.memory_bytes == registry.memory_needed(registry.MODELS[name], "float16") + vqgan, name
    assert "10.4 GB download" in choices["mega"].label and "fits this device" in choices["mega"].label
    tiny = fake("cpu", "cpu", memory_gib=4)
    assert "too big" in {c.name: c for c in model_choices(tiny)}["mega"].label

    picker = ModelPicker(tiny)
    assert picker.value == "mini"                                  # the largest that fits
    assert [value for _, value in picker.widget.options] == ["mini", "mega", "mega-fp16"]
    picker.widget.value = "mega-fp16"
    assert picker.value == "mega-fp16"


def test_the_recommended_model_is_by_measured_memory_and_mini_on_a_cpu():
    assert fake("gpu", "NVIDIA A100-SXM4-40GB", memory_gib=40).recommended_model() == (
        "mega", "the largest that fits the 40.0 GiB one device has")
    name, why = fake("cpu", "cpu", memory_gib=20).recommended_model()
    assert name == "mini" and why == ("a CPU: Mega fits the 20.0 GiB free now, and would take minutes per "
                                      "image")
    assert fake("cpu", "cpu", memory_gib=4).recommended_model()[1].startswith(
        "a CPU: Mega does not fit the 4.0")
    assert fake("cpu", "cpu", memory_gib=1).recommended_model() == (
        None, "not even mini fits the 1.0 GiB of memory free now")
    summary = fake("cpu", "cpu", memory_gib=20).summary()
    assert "model:        mini (a CPU: Mega fits the 20.0 GiB free now" in summary
    assert "devices:      1 × cpu (cpu), 20.0 GiB free now" in summary


@pytest.mark.parametrize("environment", [None, "", "1.5"])
def test_the_compilation_cache_keeps_every_program_unless_the_environment_says(environment, tmp_path,
                                                                               monkeypatch):
    """A quick compile on a small host still takes seconds, and a session makes many: every program is
    kept; a JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS the user set (jax read it at import) stays."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    before = {name: getattr(jax.config, name) for name in names}
    monkeypatch.delenv(device_module.MIN_COMPILE_TIME_VARIABLE, raising=False)
    if environment is not None:
        monkeypatch.setenv(device_module.MIN_COMPILE_TIME_VARIABLE, environment)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.5)   # as jax sets it from "1.5"
    try:
        assert device_module.use_compilation_cache(tmp_path / "jax") == tmp_path / "jax"
        assert (tmp_path / "jax").is_dir()
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax")
        kept = 1.5 if environment else 0.0
        assert jax.config.jax_persistent_cache_min_compile_time_secs == kept
        assert jax.config.jax_persistent_cache_min_entry_size_bytes == 0
    finally:
        for name, value in before.items():       # the session's own cache (tests/conftest.py)
            jax.config.update(name, value)
