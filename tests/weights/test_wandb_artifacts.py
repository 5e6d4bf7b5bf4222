"""W&B artifacts (nbkit/weights/wandb_artifacts.py): names, the optional extra, versions kept inside the
cache, failures said as such. A stand-in `wandb` module plays the service."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from nbkit.weights import hub, huggingface, wandb_artifacts


def test_wandb_artifact_names():
    artifact = wandb_artifacts.parse_artifact("dalle-mini/dalle-mini/mega-1-fp16:latest")
    assert artifact == wandb_artifacts.WandbArtifact("dalle-mini", "dalle-mini", "mega-1-fp16", "latest")
    assert artifact.full_name == "dalle-mini/dalle-mini/mega-1-fp16:latest"
    assert wandb_artifacts.parse_artifact("dalle-mini/dalle-mini/mini-1:v0").version == "v0"
    for not_an_artifact in ("dalle-mini/dalle-mini", "a/b:v1", "a/b/c/d:v1", "a/b/c", "a/b/c:"):
        assert wandb_artifacts.parse_artifact(not_an_artifact) is None, not_an_artifact


def test_wandb_artifact_without_the_extra_names_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)               # import wandb fails
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("NBKIT_OFFLINE", raising=False)
    for name in ("mega-fp16", "someone/project/model:v3"):
        with pytest.raises(hub.ModelUnavailableError,
                           match=r"needs the `wandb` package: pip install 'nbkit\[wandb\]'"):
            hub.fetch(name, cache=tmp_path)


def fake_wandb(monkeypatch, artifact):
    """A `wandb` module whose Api().artifact(name) gives `artifact`, or raises it if it is an error."""
    def get(name):
        if isinstance(artifact, BaseException):
            raise artifact
        return artifact
    api = types.SimpleNamespace(artifact=get)
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=lambda: api))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("NBKIT_OFFLINE", raising=False)


class RemoteArtifact:
    def __init__(self, version):
        self.version = version

    def download(self, root):
        Path(root).mkdir(parents=True)
        for name in huggingface.REQUIRED_FILES:
            (Path(root) / name).write_text("{}")


def test_wandb_versions_that_would_leave_the_cache_are_refused(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    fake_wandb(monkeypatch, RemoteArtifact("v1"))
    with pytest.raises(hub.ModelUnavailableError, match="refusing the version '..'"):
        hub.fetch("someone/project/model:..", cache=cache)
    fake_wandb(monkeypatch, RemoteArtifact("../../../escaped"))
    with pytest.raises(hub.ModelUnavailableError, match="refusing the version W&B named '../../../escaped'"):
        hub.fetch("someone/project/model:latest", cache=cache)
    assert set(tmp_path.iterdir()) <= {cache}                     # no tmp_path/escaped
    assert not list(tmp_path.rglob("config.json"))
    fake_wandb(monkeypatch, RemoteArtifact("v3"))
    folder = hub.fetch("someone/project/model:latest", cache=cache)
    assert folder == cache / "wandb" / "someone--project--model" / "v3"
    assert (folder.parent / "refs" / "latest").read_text() == "v3"


class ResponseError(Exception):
    """What HTTP libraries raise for an error status: the response is on the error."""
    response = types.SimpleNamespace(status_code=502, url="https://api.wandb.ai/graphql")


def test_wandb_failures_say_what_happened_and_bugs_pass_through(monkeypatch, tmp_path):
    fake_wandb(monkeypatch, ConnectionError("Name or service not known"))
    with pytest.raises(hub.ModelUnavailableError, match=r"W&B could not be reached \(ConnectionError: Name"):
        hub.fetch("someone/project/model:v1", cache=tmp_path)
    wrapped = RuntimeError("CommError: could not talk to W&B")
    wrapped.exc = ResponseError("502")                               # wandb's CommError keeps the cause here
    fake_wandb(monkeypatch, wrapped)
    with pytest.raises(hub.ModelUnavailableError, match="W&B answered 502 Bad Gateway for https://api.wandb"):
        hub.fetch("someone/project/model:v1", cache=tmp_path)
    fake_wandb(monkeypatch, AttributeError("'NoneType' object has no attribute 'version'"))
    with pytest.raises(AttributeError, match="has no attribute 'version'"):
        hub.fetch("someone/project/model:v1", cache=tmp_path)
