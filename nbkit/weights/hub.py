"""Model names → ready folders on disk: which source a name means, and the cache that holds them.

A model is asked for by a registered name (`mini`, `vqgan`, … see `nbkit.weights.registry`), a local
folder, a hub id (`org/name` or `org/name@revision`) or a W&B artifact (`entity/project/name:version`);
`fetch` sends each to its source module (`huggingface`, `wandb_artifacts`, `releases`), which downloads
what the cache lacks (`download`: progress, resume) and checks it (`verify`). Why a model cannot be had
is said per kind of model (`errors`); `fetch`'s errors, ModelUnavailableError and CorruptFileError, are
imported here because callers catch them here (`from nbkit import hub`).

The cache (`model_cache()`) holds one folder per model and commit, so a pinned model found there is
used without touching the network (a second Colab session with Drive mounted downloads nothing):

    <cache>/hub/<org>--<name>/<commit>/…files…     a model folder, as loaders expect it
    <cache>/hub/<org>--<name>/refs/<revision>      the commit a branch pointed to when last seen
    <cache>/wandb/<entity>--<project>--<name>/<version>/…
    <cache>/releases/<name>/<sha256>/<file>         a file from a URL (the upscalers' GitHub assets)
    <cache>/partial/<hash>.part                    downloads under way

A registered name always means the registered model, even where a folder of that name exists in the
working directory: write a folder as a path (`./mini`, an absolute path, anything with a `/`) or pass a
`Path`. Revisions, commits and versions become folder names, so one that would lead outside its
folder (`../x`, `/x`) is refused (`cache_folders`).

A download grows its `.part` file and continues from its end after an interruption (HTTP Range);
only a file whose size and hash match what the hub publishes (sha256 for LFS files, the git blob
sha1 otherwise) is moved into a model folder. Each folder's `.nbkit-files.json` records what was
verified, so a file changed afterwards (same size or not) is hashed again and, if damaged, replaced.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from nbkit.places import model_cache
from nbkit.weights.errors import CorruptFileError, ModelUnavailableError
from nbkit.weights.huggingface import HUB_ID, fetch_files, fetch_repo
from nbkit.weights.registry import MODELS, UPSCALER
from nbkit.weights.releases import fetch_release
from nbkit.weights.verify import VERIFIED_FILE
from nbkit.weights.wandb_artifacts import fetch_artifact, parse_artifact

__all__ = ["CorruptFileError", "ModelUnavailableError", "UPSCALER_SUFFIXES", "cached_models", "fetch",
           "fetch_upscaler", "looks_like_path", "recorded_name"]


def looks_like_path(text: str) -> bool:
    """Whether a model's name is written as a path: `./x`, `../x`, `.x`, `/x`, `~/x`, `x/` or with a
    backslash (a hub id's two parts are plain names that start with neither a dot nor a slash)."""
    return text.startswith((".", "/", "~")) or text.endswith(("/", "\\")) or "\\" in text


def fetch(model: str | Path, cache: str | Path | None = None, progress: bool = True,
          kind: str | None = None) -> Path:
    """A folder holding `model`'s files, downloading what the cache lacks. A bare registered name is
    the registered model even where a folder of that name is here; a `Path`, or a name written as a
    path (`looks_like_path`), is always a folder. `kind` (DALLEBART, VQGAN, CLIP, …; registered names
    know their own) only shapes the message when the model cannot be had."""
    text = str(model)
    path = Path(text).expanduser()
    named = text in MODELS and not isinstance(model, Path)
    kind = MODELS[text].kind if named else kind
    if path.is_dir():
        if not named:
            return path
        _warn_shadowed(text)
    elif isinstance(model, Path) or looks_like_path(text):
        raise _no_folder(path, kind)
    root = model_cache(cache)
    if named:
        registered = MODELS[text]
        if registered.release:
            return fetch_release(registered, root, progress)
        if registered.artifact:
            folder = fetch_artifact(parse_artifact(registered.artifact), root, text, progress, kind)
            fetch_files(registered.files, folder, root, progress, text, kind)
            return folder
        return fetch_repo(registered.repo, registered.revision, root, progress, text, registered.files, kind)
    if artifact := parse_artifact(text):
        return fetch_artifact(artifact, root, text, progress, kind)
    if match := HUB_ID.match(text):
        return fetch_repo(match["repo"], match["revision"] or "main", root, progress, text, kind=kind)
    if os.sep in text.strip(os.sep).replace("/", "", 1):
        raise _no_folder(path, kind)
    raise ModelUnavailableError(
        f"Unknown model {text!r}. Use a name ({', '.join(_names(kind))}), a local folder (written as a path: "
        "'./folder'), a hub id ('org/name' or 'org/name@revision') or a W&B artifact "
        "('entity/project/name:version').")


def _names(kind: str | None) -> list[str]:
    """The registered names of a kind (all when the kind is not known)."""
    return [name for name, model in MODELS.items() if kind is None or model.kind == kind] or list(MODELS)


def _no_folder(path: Path, kind: str | None = None) -> ModelUnavailableError:
    return ModelUnavailableError(f"Model folder {path.absolute()} does not exist. Check the path (on Colab, "
                                 "is Drive mounted?) or use a model name: " + ", ".join(_names(kind)) + ".")


def recorded_name(model: str | Path, folder: Path) -> str:
    """What a run records as its model, so that the record means the same model anywhere: a registered
    name as it is (it pins its revision), a local folder as its absolute path, a hub id with the commit
    it was fetched at (`org/name@<commit>`), a W&B artifact with its version."""
    text = str(model)
    if text in MODELS and not isinstance(model, Path):
        return text
    if isinstance(model, Path) or looks_like_path(text) or Path(text).expanduser().is_dir():
        return str(Path(text).expanduser().resolve())
    if artifact := parse_artifact(text):
        return f"{artifact.entity}/{artifact.project}/{artifact.name}:{folder.name}"
    if match := HUB_ID.match(text):
        return f"{match['repo']}@{folder.name}"
    return text


_SHADOWED_WARNED: set[str] = set()


def _warn_shadowed(name: str) -> None:
    """Once per name: a folder here has a registered model's name, and the name wins."""
    if name in _SHADOWED_WARNED:
        return
    _SHADOWED_WARNED.add(name)
    warnings.warn(f"{name!r} is a registered model name and also a folder in {Path.cwd()}: using the "
                  f"registered model. To use the folder, write it as a path: './{name}' (or its absolute "
                  "path).", stacklevel=3)


UPSCALER_SUFFIXES = (".pth", ".pt", ".safetensors")


def fetch_upscaler(model: str | Path, cache: str | Path | None = None, progress: bool = True) -> Path:
    """The weights file of an upscaler: a registered name (`esrgan-x4`, … downloaded once, then from the
    cache), a `.pth`/`.safetensors` file, or a folder holding exactly one such file."""
    text = str(model)
    upscalers = ", ".join(n for n, m in MODELS.items() if m.kind == UPSCALER)
    if text in MODELS and not isinstance(model, Path):
        registered = MODELS[text]
        if registered.kind != UPSCALER:
            raise ModelUnavailableError(f"{text!r} is not an upscaler. Use one of: {upscalers}.")
        return fetch(text, cache, progress) / registered.release.filename
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in UPSCALER_SUFFIXES and p.is_file())
        if len(found) == 1:
            return found[0]
        raise ModelUnavailableError(
            f"{path} holds {len(found) or 'no'} upscaler weight files ({', '.join(p.name for p in found)}); "
            "give the path of one .pth or .safetensors file." if found else
            f"{path} holds no .pth or .safetensors file: give an upscaler's weights file or a name "
            f"({upscalers}).")
    raise ModelUnavailableError(f"Unknown upscaler {text!r}: give a name ({upscalers}), a .pth / "
                                ".safetensors file or a folder holding one.")


def cached_models(cache: str | Path | None = None) -> list[tuple[str, Path, int]]:
    """(source, folder, bytes) for every model folder in the cache, from every source."""
    root = model_cache(cache)
    found = []
    for kind in ("hub", "wandb", "releases"):
        for folder in sorted((root / kind).glob("*/*")):
            if folder.is_dir() and (folder / VERIFIED_FILE).is_file():
                size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
                name = folder.parent.name.replace('--', '/')
                found.append((name if kind == "releases" else f"{name}@{folder.name}", folder, size))
    return found
