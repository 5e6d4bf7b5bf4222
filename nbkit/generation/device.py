"""What runs here: accelerator platform, kind, count and memory; the dtype and model to use."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import jax

from nbkit.places import is_colab
from nbkit.weights import registry
from nbkit.weights.registry import GIB

# HBM per core where the runtime does not report it (TPUs before memory_stats worked everywhere).
_TPU_MEMORY = {"v2": 8, "v3": 16, "v4": 32, "v5 lite": 16, "v5e": 16, "v5p": 95, "v6 lite": 32, "v6e": 32}
# GPUs before Ampere (compute capability < 8) have no fast bfloat16: they get float16.
_PRE_AMPERE = re.compile(r"\b(T4|P4|P100|V100|K80|M60|P40|Titan V|GTX|RTX 20\d\d|Quadro)\b", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    platform: str                  # "tpu", "gpu" or "cpu"
    kind: str                      # e.g. "TPU v2", "Tesla T4", "NVIDIA H100 80GB HBM3", "cpu"
    count: int                     # devices over all processes (hosts)
    processes: int
    memory_per_device: int | None  # bytes one array may use on one device (host RAM on a CPU); None: unknown
    host_memory: int
    colab: bool
    compute_capability: str | None = None

    @property
    def recommended_dtype(self) -> str:
        return recommended_dtype(self.platform, self.kind, self.compute_capability)

    def fits(self, name: str, dtype: str | None = None, sharded: bool = False) -> bool | None:
        """Whether a named DalleBart model (with the VQGAN) fits one device, or all of them if sharded;
        None when the device's memory is unknown (better no answer than a guess)."""
        if self.memory_per_device is None:
            return None
        dtype = dtype or self.recommended_dtype
        needed = registry.memory_needed(registry.MODELS[name], dtype) + registry.memory_needed(
            registry.MODELS["vqgan"], dtype)
        return needed <= self.memory_per_device * (self.count if sharded else 1)

    def largest_model(self, dtype: str | None = None) -> str | None:
        """The biggest named DalleBart that fits one device (a hub model before a W&B one); None when
        none fits or the memory is unknown."""
        by_size = sorted(registry.DALLEBART_MODELS, key=lambda name: (
            -registry.parameter_count(registry.DALLEBART, registry.MODELS[name].architecture),
            registry.MODELS[name].artifact is not None))
        return next((name for name in by_size if self.fits(name, dtype)), None)

    def recommended_model(self) -> tuple[str | None, str]:
        """The named model to use here and why, by the memory measured now: the largest that fits one
        device; on a CPU, mini (Mega draws an image in minutes there, when it fits at all)."""
        if self.memory_per_device is None:
            return None, "the device does not report its memory: compare the models' sizes with it"
        free = f"{self.memory_per_device / GIB:.1f} GiB"
        largest = self.largest_model()
        if self.platform == "cpu":
            fits = "fits" if largest is not None and largest != "mini" else "does not fit"
            mini = "mini" if self.fits("mini") else None
            if mini is None:
                return None, f"not even mini fits the {free} of memory free now"
            return mini, f"a CPU: Mega {fits} the {free} free now, and would take minutes per image"
        if largest is None:
            return None, f"none of the named models fits the {free} one device has"
        return largest, f"the largest that fits the {free} one device has"

    def summary(self) -> str:
        if self.memory_per_device is None:
            memory = "memory unknown"
        else:
            memory = f"{self.memory_per_device / GIB:.1f} GiB" + (" each" if self.count > 1 else "")
            if self.platform == "cpu":
                memory += " free now"
        name, why = self.recommended_model()
        model = f"{name or 'unknown'} ({why})"
        lines = [
            f"runtime:      {'Google Colab' if self.colab else 'not Colab'}",
            f"devices:      {self.count} × {self.kind} ({self.platform}), {memory}"
            + (f", over {self.processes} hosts" if self.processes > 1 else ""),
            f"host memory:  {self.host_memory / GIB:.1f} GiB",
            f"dtype:        {self.recommended_dtype} (recommended here)",
            f"model:        {model}",
        ]
        return "\n".join(lines)


def recommended_dtype(platform: str, kind: str = "", compute_capability: str | None = None) -> str:
    """bfloat16 on TPUs and Ampere-or-newer GPUs, float16 on older GPUs (a T4), float32 on CPUs."""
    if platform == "tpu":
        return "bfloat16"
    if platform == "gpu":
        if compute_capability:
            return "bfloat16" if float(compute_capability) >= 8 else "float16"
        return "float16" if _PRE_AMPERE.search(kind) else "bfloat16"
    return "float32"


def host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory() -> int | None:
    """Host memory free for a new program now (Linux's MemAvailable), measured; None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def device_memory(device: jax.Device) -> int | None:
    """What the runtime lets one array use on `device`; where it does not say: the host memory free now
    for the CPU (else all of it),
    the known size of a TPU kind, else None (unknown: a GPU's memory is not the host's)."""
    try:
        stats = device.memory_stats() or {}
    except Exception:  # some backends raise rather than return None
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    if device.platform == "cpu":
        return available_memory() or host_memory()
    if device.platform == "tpu":
        kind = device.device_kind.lower()
        return next((gib * GIB for name, gib in _TPU_MEMORY.items() if name in kind), None)
    return None


def detect() -> DeviceInfo:
    devices = jax.devices()
    first = devices[0]
    return DeviceInfo(
        platform=first.platform, kind=first.device_kind, count=len(devices), processes=jax.process_count(),
        memory_per_device=device_memory(first), host_memory=host_memory(), colab=is_colab(),
        compute_capability=getattr(first, "compute_capability", None))


MIN_COMPILE_TIME_VARIABLE = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"


def use_compilation_cache(folder: str | Path) -> Path:
    """Keeps compiled programs in `folder` (e.g. on Drive), so a new session skips compiling.
    Call it before the first generation.

    Every program is kept, however quick its compile: on a loaded or small host a "quick" one takes
    seconds, and a session makes many of them (each batch size, the decoder, the upscaler). A
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS set in the environment is respected."""
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    if not os.environ.get(MIN_COMPILE_TIME_VARIABLE):
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
