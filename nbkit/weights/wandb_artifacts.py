"""Models from W&B artifacts (`entity/project/name:version`) into `<cache>/wandb/<entity>--<project>--<name>/
<version>/`, through the `wandb` package (the optional extra `nbkit[wandb]`), which checks each file
against the artifact's digests. A version such as `latest` is remembered in `refs/` like a hub branch.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

from nbkit.weights.cache_folders import inside, offline, read_ref, write_ref
from nbkit.weights.errors import ModelUnavailableError, network_failure, unavailable
from nbkit.weights.huggingface import REQUIRED_FILES
from nbkit.weights.verify import read_verified, write_verified

_ARTIFACT = re.compile(r"^(?P<entity>[\w.-]+)/(?P<project>[\w.-]+)/(?P<name>[\w.-]+):(?P<version>[\w.-]+)$")


@dataclasses.dataclass(frozen=True)
class WandbArtifact:
    entity: str
    project: str
    name: str
    version: str

    @property
    def full_name(self) -> str:
        return f"{self.entity}/{self.project}/{self.name}:{self.version}"


def parse_artifact(text: str) -> WandbArtifact | None:
    """`entity/project/name:version` → its parts; None when the text is not of that form."""
    match = _ARTIFACT.match(text)
    return WandbArtifact(**match.groupdict()) if match else None


def fetch_artifact(artifact: WandbArtifact, root: Path, asked: str, progress: bool,
                   kind: str | None = None) -> Path:
    """A W&B artifact into `<root>/wandb/…/<version>`, through the `wandb` package (optional extra)."""
    artifact_root = root / "wandb" / f"{artifact.entity}--{artifact.project}--{artifact.name}"
    inside(artifact_root, artifact.version, "version", asked)
    version = read_ref(artifact_root, artifact.version, asked) or artifact.version
    folder = artifact_root / version
    if read_verified(folder).get("complete") and all((folder / n).is_file() for n in REQUIRED_FILES):
        return folder
    if offline():
        raise unavailable(asked, folder, REQUIRED_FILES, "offline mode is on", kind=kind)
    try:
        import wandb
    except ImportError:
        raise ModelUnavailableError(
            f"Model {asked!r} is the W&B artifact {artifact.full_name}, which needs the `wandb` package: "
            "pip install 'nbkit[wandb]' (then `wandb login --anonymously`), or download the artifact "
            "elsewhere and pass its folder.") from None
    try:
        remote = wandb.Api().artifact(artifact.full_name)
        folder = inside(artifact_root, remote.version, "version W&B named", asked)
        partial = inside(artifact_root, remote.version + ".partial", "version W&B named", asked)
        remote.download(root=str(partial))   # wandb checks each file against the artifact's digests
    except Exception as error:  # only the network's and the server's failures are handled
        if (failure := network_failure(error, server="W&B")) is None:
            raise
        raise unavailable(asked, folder, REQUIRED_FILES, *failure, kind=kind) from error
    if folder.exists():
        shutil.rmtree(folder)   # an earlier attempt stopped between the move and the record
    os.replace(partial, folder)
    write_ref(artifact_root, artifact.version, remote.version)
    write_verified(folder, {"complete": True, "artifact": artifact.full_name, "version": remote.version})
    return folder
