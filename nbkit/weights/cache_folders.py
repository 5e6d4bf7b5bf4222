"""Names from outside (revisions, commits, W&B versions) as folder names in the model cache, kept inside
it; the refs that remember which commit a branch named; offline mode. Shared by every source module
(`huggingface`, `wandb_artifacts`, `releases`); the cache's layout is described in `nbkit.weights.hub`.
"""

from __future__ import annotations

import os
from pathlib import Path

from nbkit.weights.errors import ModelUnavailableError


def offline() -> bool:
    """Whether the cache alone may be used (NBKIT_OFFLINE or HF_HUB_OFFLINE set to a true value)."""
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes", "on")
               for name in ("NBKIT_OFFLINE", "HF_HUB_OFFLINE"))


def inside(base: Path, name: str, what: str, asked: str, nested: bool = False) -> Path:
    """`base / name` for a name from outside (a revision, a commit, a version), refused when it would
    lead out of `base`: absolute, empty, `.` or `..` parts, or (through links) resolving elsewhere.
    Only `nested` names (revisions such as `refs/pr/1`) may hold a `/`."""
    parts = name.replace("\\", "/").split("/")
    path = base / name
    outside = (not name or Path(name).is_absolute() or (len(parts) > 1 and not nested)
               or any(part in ("", ".", "..") for part in parts)
               or not path.resolve().is_relative_to(base.resolve()))
    if outside:
        raise ModelUnavailableError(
            f"Model {asked!r}: refusing the {what} {name!r}: as a folder name in the cache it would lead "
            f"outside {base}. A revision is a branch, tag or commit such as 'main', 'v1.0' or 'refs/pr/1'; "
            "a W&B version is like 'v3' or 'latest'.")
    return path


def read_ref(repo_root: Path, revision: str, asked: str) -> str | None:
    """The commit (or W&B version) `revision` pointed to when last seen, checked to be a plain name."""
    ref = repo_root / "refs" / revision
    if not ref.is_file():
        return None
    commit = ref.read_text().strip()
    inside(repo_root, commit, f"cache record {ref}, which names", asked)
    return commit


def write_ref(repo_root: Path, revision: str, commit: str) -> None:
    """Remembers that `revision` (a branch, a tag, `latest`) named `commit` when last seen."""
    if revision != commit:
        (repo_root / "refs" / revision).parent.mkdir(parents=True, exist_ok=True)
        (repo_root / "refs" / revision).write_text(commit)
