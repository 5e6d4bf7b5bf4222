"""Downloads through the real huggingface_hub client against a local stand-in hub (tests/hub_server.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hub_server import MockHub, commit_of

from nbkit import places
from nbkit.weights import hub, registry
from nbkit.weights.loaders import load_dallebart

FIXTURES = Path(__file__).parent / "fixtures" / "golden"
DALLEBART = FIXTURES / "dallebart-tiny"
VQGAN = FIXTURES / "vqgan-tiny"


@pytest.fixture
def served(monkeypatch, tmp_path):
    """A running stand-in hub with two repos, HF_ENDPOINT pointing at it, and an empty cache."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("NBKIT_OFFLINE", raising=False)
    with MockHub({"org/dallebart": DALLEBART, "org/vqgan": VQGAN}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server, tmp_path / "cache"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gets(server: MockHub, filename: str) -> list[str | None]:
    """The Range headers of the GET requests for `filename`."""
    return [rng for method, path, rng in server.requests if method == "GET" and path.endswith("/" + filename)]


def test_first_download_gives_a_loadable_model_folder(served):
    server, cache = served
    folder = hub.fetch("org/dallebart", cache=cache, progress=False)
    assert folder == cache / "hub" / "org--dallebart" / commit_of("org/dallebart")
    for name in ("config.json", "flax_model.msgpack", "tokenizer.json", "vocab.json", "merges.txt",
                 "enwiki-words-frequency.txt"):
        assert (folder / name).read_bytes() == (DALLEBART / name).read_bytes(), name
    assert not (folder / "preprocessor_config.json").exists()     # optional, and absent from the repo
    assert (cache / "hub" / "org--dallebart" / "refs" / "main").read_text() == commit_of("org/dallebart")
    assert hub.verify(folder) == {name: True for name in hub.verify(folder)} and len(hub.verify(folder)) >= 7
    model, params = load_dallebart(folder)
    assert model.config.d_model > 0 and params
    assert [path for _, path, _ in hub.cached_models(cache)] == [folder]


def test_progress_bar_is_shown(served, capsys):
    _, cache = served
    hub.fetch("org/vqgan", cache=cache, progress=True)
    assert "flax_model.msgpack" in capsys.readouterr().err


def test_cache_hit_needs_no_server(served, monkeypatch):
    server, cache = served
    first = hub.fetch("org/vqgan", cache=cache, progress=False)
    server.stop()
    requests = len(server.requests)
    assert hub.fetch("org/vqgan", cache=cache, progress=False) == first
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.fetch(f"org/vqgan@{commit_of('org/vqgan')}", cache=cache, progress=False) == first
    assert len(server.requests) == requests


def test_download_killed_half_way_resumes_from_where_it_stopped(served, tmp_path):
    server, cache = served
    size = (VQGAN / "flax_model.msgpack").stat().st_size
    server.bytes_per_second = 8 << 20          # ~2 s for the 17 MB file
    partial = cache / "partial"
    child = subprocess.Popen(
        [sys.executable, "-c", f"from nbkit.weights import hub; hub.fetch('org/vqgan', cache={str(cache)!r}, progress=False)"],
        env={**os.environ, "HF_ENDPOINT": server.url, "PYTHONPATH": str(Path(__file__).parent.parent)})
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size > 0 for p in partial.glob("*.part")) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done = max(p.stat().st_size for p in partial.glob("*.part"))
    assert 0 < done < size
    model_folder = cache / "hub" / "org--vqgan" / commit_of("org/vqgan")
    assert not (model_folder / "flax_model.msgpack").exists()    # nothing passes for complete
    server.bytes_per_second = None
    folder = hub.fetch("org/vqgan", cache=cache, progress=False)
    assert gets(server, "flax_model.msgpack")[-1] == f"bytes={done}-"
    assert sha256(folder / "flax_model.msgpack") == sha256(VQGAN / "flax_model.msgpack")
    assert not list(partial.glob("*.part"))


def test_corrupted_cached_file_is_detected_and_replaced(served):
    server, cache = served
    folder = hub.fetch("org/vqgan", cache=cache, progress=False)
    weights = folder / "flax_model.msgpack"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF                    # same size, one byte flipped
    weights.write_bytes(bytes(data))
    assert hub.verify(folder)["flax_model.msgpack"] is False
    assert hub.fetch("org/vqgan", cache=cache, progress=False) == folder
    assert sha256(weights) == sha256(VQGAN / "flax_model.msgpack")
    assert len(gets(server, "flax_model.msgpack")) == 2


def test_corrupted_cached_file_without_network_is_named(served):
    server, cache = served
    folder = hub.fetch("org/vqgan", cache=cache, progress=False)
    (folder / "flax_model.msgpack").write_bytes(b"\x00" * 10)
    server.stop()
    with pytest.raises(hub.ModelUnavailableError, match="lacks flax_model.msgpack") as error:
        hub.fetch("org/vqgan", cache=cache, progress=False)
    assert "could not be reached" in str(error.value)


def test_damaged_download_is_refused_and_deleted(served, monkeypatch):
    server, cache = served
    wrong = registry.HubFile("org/vqgan", "main", "flax_model.msgpack", sha256="0" * 64)
    fake = dataclasses.replace(registry.MODELS["vqgan"], repo="org/vqgan", revision="main",
                               files=(registry.HubFile("org/vqgan", "main", "config.json"), wrong))
    monkeypatch.setitem(hub.MODELS, "vqgan", fake)
    with pytest.raises(hub.CorruptFileError, match="does not match the hub's hash"):
        hub.fetch("vqgan", cache=cache, progress=False)
    assert not list((cache / "partial").glob("*.part"))
    assert not (cache / "hub" / "org--vqgan" / commit_of("org/vqgan") / "flax_model.msgpack").exists()


def test_registered_name_downloads_its_pinned_files(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    registered = registry.MODELS["vqgan"]
    commits = {registered.repo: registered.revision}
    with MockHub({registered.repo: VQGAN}, commits=commits) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        files = tuple(dataclasses.replace(f, sha256=sha256(VQGAN / f.filename) if f.sha256 else None)
                      for f in registered.files)   # the tiny fixture stands in for the real weights
        monkeypatch.setitem(hub.MODELS, "vqgan", dataclasses.replace(registered, files=files))
        folder = hub.fetch("vqgan", cache=tmp_path, progress=False)
    assert folder.name == registered.revision
    assert {p.name for p in folder.iterdir() if not p.name.startswith(".")} == {"config.json", "flax_model.msgpack"}
    assert all(f"/resolve/{registered.revision}/" in path for _, path, _ in server.requests)


def test_word_list_comes_from_the_mini_repo_when_a_dallebart_repo_lacks_it(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    without = tmp_path / "without-words"
    shutil.copytree(DALLEBART, without)
    (without / registry.WORD_FREQUENCIES).unlink()
    words = tmp_path / "words"
    words.mkdir()
    shutil.copy(DALLEBART / registry.WORD_FREQUENCIES, words)
    with MockHub({"org/model": without, registry.MINI_REPO: words},
                 commits={registry.MINI_REPO: registry.MINI_REVISION}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setattr(hub, "_WORDS", dataclasses.replace(hub._WORDS, size=None, sha256=None))
        folder = hub.fetch("org/model", cache=tmp_path / "cache", progress=False)
        assert hub.fetch("org/model", cache=tmp_path / "cache", progress=False) == folder
    assert (folder / registry.WORD_FREQUENCIES).read_bytes() == (DALLEBART / registry.WORD_FREQUENCIES).read_bytes()


def test_offline_message_names_model_files_and_the_local_folder_way(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")     # nothing listens on the discard port
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(hub.ModelUnavailableError) as error:
        hub.fetch("mini", cache=tmp_path, progress=False)
    message = str(error.value)
    for part in ("'mini'", "could not be reached", "flax_model.msgpack", "config.json", "folder", "NBKIT_CACHE"):
        assert part in message, part
    monkeypatch.setenv("NBKIT_OFFLINE", "1")
    with pytest.raises(hub.ModelUnavailableError, match="offline mode is on"):
        hub.fetch("org/name@v1", cache=tmp_path, progress=False)


def test_hub_errors_say_what_is_wrong(served):
    _, cache = served
    with pytest.raises(hub.ModelUnavailableError, match="no repository 'org/missing'"):
        hub.fetch("org/missing", cache=cache, progress=False)
    with pytest.raises(hub.ModelUnavailableError, match="no revision 'v9'"):
        hub.fetch("org/vqgan@v9", cache=cache, progress=False)


def test_unknown_names_and_missing_folders(tmp_path):
    with pytest.raises(hub.ModelUnavailableError, match="Unknown model 'dalle-maxi'.*mini, mega"):
        hub.fetch("dalle-maxi", cache=tmp_path)
    with pytest.raises(hub.ModelUnavailableError, match="does not exist"):
        hub.fetch(str(tmp_path / "no" / "such" / "folder"), cache=tmp_path)
    assert hub.fetch(str(DALLEBART), cache=tmp_path) == DALLEBART


def test_cache_folder_choice(monkeypatch, tmp_path):
    monkeypatch.setenv("NBKIT_CACHE", str(tmp_path / "env"))
    assert places.model_cache() == tmp_path / "env"
    assert places.model_cache(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("NBKIT_CACHE")
    monkeypatch.setattr(places, "MY_DRIVE", tmp_path / "drive" / "MyDrive")
    monkeypatch.setattr(places, "DRIVE_FOLDER", tmp_path / "drive" / "MyDrive" / "nbkit")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert places.model_cache() == tmp_path / "xdg" / "nbkit" / "models"
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)         # Drive mounted
    assert places.model_cache() == tmp_path / "drive" / "MyDrive" / "nbkit" / "models"


def test_wandb_artifact_names():
    artifact = hub.parse_artifact("dalle-mini/dalle-mini/mega-1-fp16:latest")
    assert artifact == hub.WandbArtifact("dalle-mini", "dalle-mini", "mega-1-fp16", "latest")
    assert artifact.full_name == "dalle-mini/dalle-mini/mega-1-fp16:latest"
    assert hub.parse_artifact("dalle-mini/dalle-mini/mini-1:v0").version == "v0"
    for not_an_artifact in ("dalle-mini/dalle-mini", "a/b:v1", "a/b/c/d:v1", "a/b/c", "a/b/c:"):
        assert hub.parse_artifact(not_an_artifact) is None, not_an_artifact


def test_wandb_artifact_without_the_extra_names_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)               # import wandb fails
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("NBKIT_OFFLINE", raising=False)
    for name in ("mega-fp16", "someone/project/model:v3"):
        with pytest.raises(hub.ModelUnavailableError, match=r"needs the `wandb` package: pip install 'nbkit\[wandb\]'"):
            hub.fetch(name, cache=tmp_path)


def test_registry_sizes_agree_with_the_architectures():
    """A float32 checkpoint is its parameters × 4 bytes plus a little msgpack framing."""
    for name in ("mini", "clip-l14"):
        model = registry.MODELS[name]
        weights = next(f for f in model.files if f.filename == "flax_model.msgpack")
        framing = weights.size - 4 * registry.parameter_count(model.kind, model.architecture)
        assert 0 < framing < 1 << 20, (name, framing)
    for model in registry.MODELS.values():
        assert model.license_url.startswith("https://") and model.download_bytes > 0
        half, full = (registry.memory_needed(model, dtype) for dtype in ("bfloat16", "float32"))
        assert half < full
