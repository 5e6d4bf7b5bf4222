"""Shared fixtures and helpers, in one place: where the golden reference outputs live, the tiny pipeline,
how far half precision may stray, a compilation counter, one persistent compilation cache, one Ray and one
8-device process a session, and how the suite shares the two cores (pytest-xdist: a file a worker).

A golden set that cannot be used makes the golden tests fail, naming the folder, rather than skip:
a mistyped NBKIT_GOLDEN_DIR would otherwise pass as a green run that compared nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# One persistent compilation cache a test session, made before jax is imported: the environment carries it
# to pytest-xdist's workers and to every process a test starts (the CLI, servers, notebooks' kernels, Ray's
# replicas), so a program compiled once (a tiny pipeline's loop takes 20-25 s per batch size on 2 cores) is
# loaded by the others. It starts empty each session: what the suite measures is a fresh clone's run.
# `count_compilations` counts the cache's hits as compilations, so compile-once tests stay honest.
# Every program is kept (a minimum compile time of 0, as nbkit's own `use_compilation_cache` keeps them): on
# 2 loaded cores even a "quick" compile takes seconds. The same session folder holds what the workers share
# besides: the one 8-device run's results (`eight_devices`).
SESSION_CACHE_OWNER = "NBKIT_TEST_CACHE_OWNER"
SESSION_FOLDER = "NBKIT_TEST_SESSION_DIR"
if not (os.environ.get(SESSION_CACHE_OWNER) and os.environ.get(SESSION_FOLDER)):
    os.environ[SESSION_CACHE_OWNER] = str(os.getpid())
    os.environ[SESSION_FOLDER] = tempfile.mkdtemp(prefix="nbkit-test-session-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(Path(os.environ[SESSION_FOLDER]) / "jax-cache")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
SESSION = Path(os.environ[SESSION_FOLDER])
COMPILATION_CACHE = Path(os.environ["JAX_COMPILATION_CACHE_DIR"])

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

TESTS = Path(__file__).resolve().parent          # where the shared helpers and fixtures live
ROOT = TESTS.parent                              # the checkout
BUNDLED_GOLDEN_DIR = TESTS / "fixtures" / "golden"
GOLDEN = BUNDLED_GOLDEN_DIR                      # the tiny models that unit tests run
DALLEBART, VQGAN, CLIP = GOLDEN / "dallebart-tiny", GOLDEN / "vqgan-tiny", GOLDEN / "clip-tiny"
GOLDEN_DIR = Path(os.environ.get("NBKIT_GOLDEN_DIR") or BUNDLED_GOLDEN_DIR)
GOLDEN_KINDS = ("dallebart", "vqgan", "clip", "text", "esrgan", "marian")
# What marks a usable folder of each kind: a model folder has its config.json; the upscalers' folders
# (released files carry no config) hold their expected outputs beside the weights.
_FOLDER_MARKER = {"esrgan": "expected.npz"}
# float32 results against the reference's: it ran on jax 0.4.13, whose XLA orders sums differently and
# has other exp, erf and rsqrt, so agreement is to "about 1e-4" (tests/fixtures/golden/README.md).
REFERENCE_ATOL = 1e-4


def golden_folders(prefix: str, golden_dir: Path | None = None) -> list[Path]:
    """Every `<prefix>-*` folder of the golden set (`text`: the text/ folder); what they hold is read
    from their files."""
    golden_dir = GOLDEN_DIR if golden_dir is None else golden_dir
    if prefix == "text":
        return [golden_dir / "text"] if (golden_dir / "text" / "normalize.json").is_file() else []
    marker = _FOLDER_MARKER.get(prefix, "config.json")
    return sorted(p for p in golden_dir.glob(f"{prefix}-*") if (p / marker).is_file())


def golden_problem(golden_dir: Path, from_environment: bool) -> str | None:
    """Why the golden set in `golden_dir` cannot be used, or None. A set named by NBKIT_GOLDEN_DIR
    needs at least one of the golden folders; the bundled one, all of them."""
    named = f"NBKIT_GOLDEN_DIR={golden_dir}" if from_environment else f"The bundled golden set {golden_dir}"
    expected = ("dallebart-*, vqgan-*, clip-*, esrgan-* and text/, as tests/fixtures/golden/README.md "
                "describes")
    if not golden_dir.is_dir():
        return (f"{named} is not a folder. It must hold the golden fixtures: {expected}. "
                + ("Fix the path, or unset it to use the bundled set." if from_environment
                   else "Restore it: git checkout -- tests/fixtures/golden"))
    found = [kind for kind in GOLDEN_KINDS if golden_folders(kind, golden_dir)]
    if from_environment and not found:
        return f"{named} holds none of the golden folders ({expected}). Fix the path, or unset it."
    if not from_environment and len(found) < len(GOLDEN_KINDS):
        missing = ", ".join(kind for kind in GOLDEN_KINDS if kind not in found)
        return f"{named} lacks {missing}. Restore it: git checkout -- tests/fixtures/golden"
    return None


GOLDEN_PROBLEM = golden_problem(GOLDEN_DIR, bool(os.environ.get("NBKIT_GOLDEN_DIR")))


@pytest.fixture(autouse=True)
def _golden_set_is_usable(request):
    """Golden tests fail (not skip) when the golden set cannot be used."""
    if GOLDEN_PROBLEM and request.node.get_closest_marker("golden"):
        pytest.fail(GOLDEN_PROBLEM, pytrace=False)


def golden_params(prefix: str):
    """One parameter per `<prefix>-*` folder, for golden tests. A set that cannot be used gives one
    parameter, None, which `_golden_set_is_usable` fails; a usable set from NBKIT_GOLDEN_DIR that
    lacks this kind skips it, naming the folder."""
    if GOLDEN_PROBLEM:
        return [pytest.param(None, id="unusable-golden-set")]
    folders = golden_folders(prefix)
    if not folders:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no {prefix}-* folder in {GOLDEN_DIR}"))]
    return [pytest.param(folder, id=folder.name) for folder in folders]


def golden_folder(prefix: str) -> Path:
    """The first `<prefix>-*` folder (the tiny models that unit tests run); fails, naming the golden
    folder, when there is none."""
    folders = [] if GOLDEN_PROBLEM else golden_folders(prefix)
    if not folders:
        pytest.fail(GOLDEN_PROBLEM or f"No {prefix}-* folder in {GOLDEN_DIR} (NBKIT_GOLDEN_DIR): the tests "
                    "need its tiny model.", pytrace=False)
    return folders[0]


def kernel_count(params) -> int:
    """How many weight matrices (dense or conv kernels) a parameter tree holds."""
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    return sum(1 for path, _ in paths if "kernel" in jax.tree_util.keystr(path))


def rounding_bound(dtype, params, magnitude: float) -> float:
    """How far a value computed in `dtype` may stray from float32's: sqrt(n) · eps · magnitude.

    Each rounding is off by at most eps/2 relative to the values it combines; independent roundings
    add like a random walk, so after n chained products the error is about sqrt(n) times one
    rounding (the probabilistic bound of Higham & Mary, SIAM J. Sci. Comput. 2019), here taken as
    sqrt(n) · eps, twice the unit roundoff. n is the number of weight matrices the model holds,
    which counts every product a value can pass through (and parallel ones too), and `magnitude`
    is the size of what is summed: the values' largest magnitude, or for a score that is a scaled
    dot product of unit vectors, the scale."""
    return math.sqrt(kernel_count(params)) * float(jnp.finfo(dtype).eps) * float(magnitude)


# Pixels made again, on another device count, batch layout or machine (README: "What is identical"): the
# tokens are the same, but the VQGAN's float sums may run in another order and the truncation to uint8 can
# then put a value one level apart. Only values whose float lands within rounding error of a level's edge
# move: 0.007 % of them measured on 1 against 8 CPU devices. "Few" is taken as at most 1 %: a hundred times
# that rate, while a real difference (other tokens, another decode) moves most values, and by many levels.
FEW_PIXELS = 0.01


def assert_pixels_within_one_level(a, b, what: str = "") -> int:
    """Asserts the README's contract for the same tokens' pixels: at most one uint8 level apart, in at most
    FEW_PIXELS of the values. Returns how many values differ."""
    a, b = np.asarray(a, np.int16), np.asarray(b, np.int16)
    assert a.shape == b.shape, f"{what}: shapes {a.shape} and {b.shape}"
    levels = np.abs(a - b)
    assert levels.max() <= 1, f"{what}: {int(levels.max())} levels apart"
    differ = int(np.count_nonzero(levels))
    assert differ <= FEW_PIXELS * levels.size, f"{what}: {differ} of {levels.size} values differ by one level"
    return differ


def max_magnitude(values) -> float:
    return float(np.abs(np.asarray(values, np.float32)).max())


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf8"))


@contextlib.contextmanager
def reference_prng():
    """The reference ran on jax 0.4.13, whose threefry was not "partitionable"."""
    previous = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    try:
        yield
    finally:
        jax.config.update("jax_threefry_partitionable", previous)


class CompilationCounter:
    """Counts XLA compilations (any jitted function) while active: programs compiled, and programs loaded
    from the persistent compilation cache (which skip the compiler, so its event alone would miss them)."""

    def __init__(self):
        self.count = 0
        self._active = False
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)

    def _on_duration(self, name, duration, **kwargs):
        if self._active and name == "/jax/core/compile/backend_compile_duration":
            self.count += 1

    def _on_event(self, name, **kwargs):
        if self._active and name == "/jax/compilation_cache/cache_hits":
            self.count += 1

    @contextlib.contextmanager
    def __call__(self):
        self.count, self._active = 0, True
        try:
            yield self
        finally:
            self._active = False


_COUNTER = None


@pytest.fixture
def count_compilations():
    global _COUNTER
    if _COUNTER is None:
        _COUNTER = CompilationCounter()
    return _COUNTER


def tiny_pipeline(max_batch: int | None = None, dtype: str = "float32", **options):
    """The tiny fixture models as a Pipeline (the one factory of the suite). Loading them takes well under
    a second; pipelines in one process share their compiled programs, and processes share them through
    the session's compilation cache."""
    from nbkit.generation.pipeline import Pipeline

    if max_batch is not None:
        options["max_batch"] = max_batch
    return Pipeline.from_pretrained(DALLEBART, VQGAN, dtype=dtype, progress=False, **options)


@pytest.fixture(scope="session")
def keep_ray():
    """Ray starts once a session (about 11 s on 2 cores): the first pool starts it, as nbkit does, and
    `keep_ray(pool)` leaves it running when that pool stops; it is stopped at the session's end."""
    kept = []

    def keep(pool):
        if pool._started_ray:
            pool._started_ray = False
            kept.append(pool)
        return pool

    yield keep
    if kept:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


@dataclasses.dataclass(frozen=True)
class EightDevices:
    """What tests/eight_devices_run.py made on 8 host devices: `results` (its results.json) and the folder
    that holds its files (pixels.npz, cli/, upscaled.npy)."""

    results: dict
    folder: Path


@pytest.fixture(scope="session")
def eight_devices() -> EightDevices:
    """The one 8-device process of the session (each start pays jax's import and the 8-device programs'
    compiles): the first test that asks runs tests/eight_devices_run.py, whichever worker it is in; a test
    of the other worker waits for it (a file lock in the session folder) and reads what it left. A failed
    run fails every test that asks, with its error, and is not run again."""
    import fcntl

    folder, failure = SESSION / "eight-devices", SESSION / "eight-devices.failed"
    with open(SESSION / "eight-devices.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "results.json").is_file() and not failure.is_file():
            folder.mkdir(exist_ok=True)
            env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
                   "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
            upscaler = golden_folder("esrgan").parent / "esrgan-tiny-x4" / "model.safetensors"  # test_upscale
            try:
                run = subprocess.run([sys.executable, str(TESTS / "eight_devices_run.py"), str(folder),
                                      str(DALLEBART), str(VQGAN), str(upscaler)],
                                     env=env, capture_output=True, text=True, timeout=900)
                problem = "" if run.returncode == 0 else f"exit {run.returncode}: {run.stderr[-3000:]}"
            except subprocess.TimeoutExpired:
                problem = "did not finish in 900 s"
            if problem:
                failure.write_text(problem)
    if failure.is_file():
        pytest.fail(f"tests/eight_devices_run.py failed: {failure.read_text()}", pytrace=False)
    return EightDevices(read_json(folder / "results.json"), folder)


# ---- sharing the two cores: `-n 2 --dist loadfile` (pyproject.toml's addopts)

# Files whose tests run in one worker, one after the other, as if they were one file: both start the one
# local Ray of the session (keep_ray), whose replicas take the cores they ask for.
SHARED_WORKER = {"test_cluster.py": "ray", "test_replicas.py": "ray"}
# Handed out first, so that no long file starts last while the other worker idles; the rest follow by
# their number of tests (pytest-xdist's own order).
LONGEST_FIRST = ("ray", "test_server.py", "test_notebooks.py", "test_cli.py", "test_page.py",
                 "test_pipeline.py", "test_from_image.py", "test_hostile.py", "test_ui.py", "test_upscale.py")


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` with SHARED_WORKER and LONGEST_FIRST: each file's tests run in one worker (so a
    module's pipeline, server or notebook kernel starts once). pytest-xdist's `loadgroup` would do the
    grouping, but with pytest 9 its xdist_group marks are ignored (they rename node ids, which pytest 9
    no longer reads)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SHARED_WORKER.get(path.rpartition("/")[2], path)

        def _assign_work_unit(self, node) -> None:
            if not self.ordered:
                rank = lambda scope: next((n for n, name in enumerate(LONGEST_FIRST)
                                           if scope.rpartition("/")[2] == name), len(LONGEST_FIRST))
                units = sorted(self.workqueue.items(), key=lambda unit: rank(unit[0]))
                self.workqueue.clear()
                self.workqueue.update(units)
                self.ordered = True
            super()._assign_work_unit(node)

    return FileScheduling(config, log)


def pytest_unconfigure(config):
    """The process that made the session's folder (and compilation cache) removes it."""
    if os.environ.get(SESSION_CACHE_OWNER) == str(os.getpid()):
        shutil.rmtree(SESSION, ignore_errors=True)
