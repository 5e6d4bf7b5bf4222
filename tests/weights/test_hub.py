"""Downloads through the real huggingface_hub client against a local stand-in hub (tests/hub_server.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from conftest import GOLDEN, ROOT
from hub_server import MockHub, commit_of

from nbkit import places
from nbkit.weights import cache_folders, hub, huggingface, registry
from nbkit.weights.loaders import load_dallebart

FIXTURES = GOLDEN
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
    recorded = json.loads((folder / hub.VERIFIED_FILE).read_text())
    assert {name for name, stamp in recorded.items() if isinstance(stamp, dict)} == {
        "config.json", "flax_model.msgpack", "tokenizer.json", "vocab.json", "merges.txt",
        "tokenizer_config.json", "special_tokens_map.json", "enwiki-words-frequency.txt"}
    assert recorded["flax_model.msgpack"]["hash"] == sha256(DALLEBART / "flax_model.msgpack")
    model, _ = load_dallebart(folder)
    assert model.config == load_dallebart(DALLEBART)[0].config
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
    code = f"from nbkit.weights import hub; hub.fetch('org/vqgan', cache={str(cache)!r}, progress=False)"
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "HF_ENDPOINT": server.url, "PYTHONPATH": str(ROOT)})
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
    monkeypatch.setitem(registry.MODELS, "vqgan", fake)
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
        monkeypatch.setitem(registry.MODELS, "vqgan", dataclasses.replace(registered, files=files))
        folder = hub.fetch("vqgan", cache=tmp_path, progress=False)
    assert folder.name == registered.revision
    shown = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    assert shown == {"config.json", "flax_model.msgpack"}
    # file requests only: huggingface_hub 2.x may also ask the hub for /api/agent-harnesses, once a day
    files = [path for _, path, _ in server.requests if "/resolve/" in path]
    assert files and all(f"/resolve/{registered.revision}/" in path for path in files)


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
        unpinned = dataclasses.replace(registry.WORDS_FILE, size=None, sha256=None)
        monkeypatch.setattr(huggingface, "WORDS_FILE", unpinned)
        folder = hub.fetch("org/model", cache=tmp_path / "cache", progress=False)
        assert hub.fetch("org/model", cache=tmp_path / "cache", progress=False) == folder
    words = registry.WORD_FREQUENCIES
    assert (folder / words).read_bytes() == (DALLEBART / words).read_bytes()


def test_offline_message_names_model_files_and_the_local_folder_way(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")     # nothing listens on the discard port
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(hub.ModelUnavailableError) as error:
        hub.fetch("mini", cache=tmp_path, progress=False)
    message = str(error.value)
    for part in ("'mini'", "could not be reached", "flax_model.msgpack", "config.json", "folder",
                 "NBKIT_CACHE"):
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


def test_a_hub_in_trouble_is_reported_as_such_not_as_no_network(served):
    server, cache = served
    server.failing = {"*": 503}
    with pytest.raises(hub.ModelUnavailableError) as error:
        hub.fetch("org/vqgan", cache=cache, progress=False)
    message = str(error.value)
    url = f"{server.url}/org/vqgan/resolve/main/config.json"
    assert f"the hub answered 503 Service Unavailable for {url}" in message
    assert "could not be reached" not in message and "Try again later" in message
    server.failing = {"flax_model.msgpack": 500}                 # the second place that asks the hub
    with pytest.raises(hub.ModelUnavailableError, match="the hub answered 500 Internal Server Error for "
                       rf"{server.url}/org/vqgan/resolve/\w+/flax_model.msgpack") as error:
        hub.fetch("org/vqgan", cache=cache, progress=False)
    assert "could not be reached" not in str(error.value)
    server.failing = {"*": 403}
    with pytest.raises(hub.ModelUnavailableError, match="answered 403 Forbidden.*a token"):
        hub.fetch("org/dallebart", cache=cache, progress=False)


def test_a_bug_is_not_dressed_up_as_network_trouble(served, monkeypatch):
    import huggingface_hub
    _, cache = served
    real = huggingface_hub.get_hf_file_metadata

    def buggy(url, **kwargs):
        if url.endswith("/config.json") and "first" not in buggy.__dict__:
            buggy.first = True
            return real(url, **kwargs)
        raise TypeError("a bug")
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", buggy)
    with pytest.raises(TypeError, match="a bug"):          # in _fetch_files, after the commit is known
        hub.fetch("org/vqgan", cache=cache, progress=False)
    with pytest.raises(TypeError, match="a bug"):          # in _fetch_hub, asking for the commit
        hub.fetch("org/dallebart", cache=cache, progress=False)


@pytest.mark.parametrize("revision", ["../../../x", "/tmp/abs", "..", "a/../../../../x", ".", "refs//x"])
def test_revisions_that_would_leave_the_cache_are_refused(served, revision):
    server, cache = served
    outside = cache / "x"            # refs/../../../x
    outside.parent.mkdir(parents=True)
    outside.write_text(commit_of("org/vqgan"))
    with pytest.raises(hub.ModelUnavailableError, match=f"refusing the revision {revision!r}"):
        hub.fetch(f"org/vqgan@{revision}", cache=cache, progress=False)
    assert server.requests == [] and sorted(p.name for p in cache.iterdir()) == ["x"]


def test_a_commit_named_by_the_server_must_be_a_plain_folder_name(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("NBKIT_OFFLINE", raising=False)
    with MockHub({"org/vqgan": VQGAN}, commits={"org/vqgan": "../../../escaped"}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        with pytest.raises(hub.ModelUnavailableError, match="refusing the commit the hub named '../../"):
            hub.fetch("org/vqgan", cache=tmp_path / "cache", progress=False)
    assert set(tmp_path.iterdir()) <= {tmp_path / "cache"}           # no tmp_path/escaped
    assert not list((tmp_path / "cache").rglob("refs"))


def test_a_damaged_ref_in_the_cache_cannot_point_outside_it(monkeypatch, tmp_path):
    monkeypatch.setenv("NBKIT_OFFLINE", "1")
    ref = tmp_path / "hub" / "org--vqgan" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("../../../elsewhere")
    with pytest.raises(hub.ModelUnavailableError, match="refusing the cache record .*'../../../elsewhere'"):
        hub.fetch("org/vqgan", cache=tmp_path, progress=False)


def test_revisions_with_a_slash_stay_allowed(monkeypatch, tmp_path):
    monkeypatch.setenv("NBKIT_OFFLINE", "1")
    with pytest.raises(hub.ModelUnavailableError, match="offline mode is on"):
        hub.fetch("org/vqgan@refs/pr/1", cache=tmp_path, progress=False)
    refs = tmp_path / "refs"
    assert cache_folders.inside(refs, "refs/pr/1", "revision", "x", nested=True) == refs / "refs" / "pr" / "1"
    with pytest.raises(hub.ModelUnavailableError, match="refusing the commit 'a/b'"):
        cache_folders.inside(tmp_path, "a/b", "commit", "x")
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(hub.ModelUnavailableError, match="refusing the revision 'link/y'"):
        cache_folders.inside(tmp_path, "link/y", "revision", "x", nested=True)


def test_a_registered_name_means_the_registered_model_even_beside_a_folder_so_named(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBKIT_OFFLINE", "1")                   # the registered model is not in this cache
    monkeypatch.setattr(hub, "_SHADOWED_WARNED", set())
    (tmp_path / "mini").mkdir()
    with pytest.warns(UserWarning, match=r"'mini' is a registered model name and also a folder.*'\./mini'"):
        with pytest.raises(hub.ModelUnavailableError, match="DALL·E model 'mini' is not available: offline"):
            hub.fetch("mini", cache=tmp_path / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # said once is enough
        with pytest.raises(hub.ModelUnavailableError, match="offline mode"):
            hub.fetch("mini", cache=tmp_path / "cache")
        for spelled in ("./mini", str(tmp_path / "mini"), Path("mini")):
            assert hub.fetch(spelled, cache=tmp_path / "cache").resolve() == tmp_path / "mini", spelled
        (tmp_path / "mine").mkdir()                                 # a bare name nobody registered
        assert hub.fetch("mine", cache=tmp_path / "cache") == Path("mine")
    with pytest.raises(hub.ModelUnavailableError, match=f"Model folder {tmp_path / 'vqgan'} does not exist"):
        hub.fetch(Path("vqgan"), cache=tmp_path / "cache")          # a Path is always a folder


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


def test_a_hub_model_is_recorded_with_its_commit_and_a_folder_absolutely(served, monkeypatch, tmp_path):
    _, cache = served
    folder = hub.fetch("org/vqgan", cache=cache, progress=False)
    assert hub.recorded_name("org/vqgan", folder) == f"org/vqgan@{commit_of('org/vqgan')}"
    assert hub.recorded_name("mini", folder) == "mini"                      # a registered name pins its own
    monkeypatch.chdir(FIXTURES)
    for spelled in ("./vqgan-tiny", "vqgan-tiny", "vqgan-tiny/", Path("vqgan-tiny")):
        assert hub.recorded_name(spelled, Path(spelled)) == str(VQGAN.resolve()), spelled
    assert hub.recorded_name("a/b/c:latest", tmp_path / "v3") == "a/b/c:v3"


@pytest.mark.parametrize("spelled", ["./nonexistent", "nonexistent/", "../nope", ".hidden/x", "~/nope/x"])
def test_names_written_as_paths_are_folders_never_hub_ids(spelled, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda *a, **k: pytest.fail("asked the hub"))
    with pytest.raises(hub.ModelUnavailableError, match="Model folder .* does not exist. Check the path"):
        hub.fetch(spelled, cache=tmp_path / "cache", kind=registry.VQGAN)


def test_offline_messages_name_each_kind_s_own_files(tmp_path, monkeypatch):
    monkeypatch.setenv("NBKIT_OFFLINE", "1")
    messages = {}
    for name in ("mini", "vqgan", "clip-b32", "translate-zh"):
        with pytest.raises(hub.ModelUnavailableError) as error:
            hub.fetch(name, cache=tmp_path)
        messages[name] = str(error.value)
    with pytest.raises(hub.ModelUnavailableError) as error:
        hub.fetch_upscaler("esrgan-x4", cache=tmp_path)
    messages["esrgan-x4"] = str(error.value)
    assert messages["mini"].startswith("DALL·E model 'mini' is not available")
    assert "merges.txt" in messages["mini"]
    assert messages["vqgan"].startswith("VQGAN 'vqgan' is not available")
    assert "copy its files (config.json and flax_model.msgpack) into a folder" in messages["vqgan"]
    assert messages["clip-b32"].startswith("CLIP model")
    assert "preprocessor_config.json" in messages["clip-b32"]
    assert messages["translate-zh"].startswith("translator") and "source.spm" in messages["translate-zh"]
    upscaler = messages["esrgan-x4"]
    assert upscaler.startswith("upscaler 'esrgan-x4' is not available")
    assert f"download {registry.MODELS['esrgan-x4'].release.url} on a machine that is online" in upscaler
    for name in ("vqgan", "esrgan-x4", "clip-b32", "translate-zh"):        # never the DALL·E list
        assert "tokenizer files (vocab.json" not in messages[name], name
    assert "flax_model.msgpack" not in upscaler and "config.json" not in upscaler
