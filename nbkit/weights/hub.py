"""Model names → ready folders on disk: download with progress, cache, check, resume.

A model is asked for by a registered name (`mini`, `vqgan`, … see `nbkit.registry`), a local
folder, a hub id (`org/name` or `org/name@revision`) or a W&B artifact (`entity/project/name:version`).

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
folder (`../x`, `/x`) is refused.

A download grows its `.part` file and continues from its end after an interruption (HTTP Range);
only a file whose size and hash match what the hub publishes (sha256 for LFS files, the git blob
sha1 otherwise) is moved into a model folder. Each folder's `.nbkit-files.json` records what was
verified, so a file changed afterwards (same size or not) is hashed again and, if damaged, replaced.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import http
import json
import os
import re
import shutil
import socket
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from nbkit.places import model_cache
from nbkit.weights.registry import (
    _WORDS,
    CLIP,
    DALLEBART,
    MODELS,
    TRANSLATOR,
    UPSCALER,
    VQGAN,
    WORD_FREQUENCIES,
    HubFile,
    RegisteredModel,
)

VERIFIED_FILE = ".nbkit-files.json"
# What nbkit reads from a model folder; the first two are needed, the rest are read when present.
REQUIRED_FILES = ("config.json", "flax_model.msgpack")
OPTIONAL_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                  "special_tokens_map.json", "preprocessor_config.json", WORD_FREQUENCIES)
_HUB_ID = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(@(?P<revision>[\w./-]+))?$")
_ARTIFACT = re.compile(r"^(?P<entity>[\w.-]+)/(?P<project>[\w.-]+)/(?P<name>[\w.-]+):(?P<version>[\w.-]+)$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class ModelUnavailableError(RuntimeError):
    """The model cannot be had: unknown name, no network and no cached copy, missing extra, …"""


class CorruptFileError(ModelUnavailableError):
    """A file's bytes do not match the size or hash the hub publishes for it."""


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


def _offline() -> bool:
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes", "on")
               for name in ("NBKIT_OFFLINE", "HF_HUB_OFFLINE"))


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
            return _fetch_release(registered, root, progress)
        if registered.artifact:
            folder = _fetch_artifact(parse_artifact(registered.artifact), root, text, progress, kind)
            _fetch_files(registered.files, folder, root, progress, text, kind)
            return folder
        return _fetch_hub(registered.repo, registered.revision, root, progress, text, registered.files, kind)
    if artifact := parse_artifact(text):
        return _fetch_artifact(artifact, root, text, progress, kind)
    if match := _HUB_ID.match(text):
        return _fetch_hub(match["repo"], match["revision"] or "main", root, progress, text, kind=kind)
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
    if match := _HUB_ID.match(text):
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


def _inside(base: Path, name: str, what: str, asked: str, nested: bool = False) -> Path:
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


# ---------------------------------------------------------------- hub


def _fetch_hub(repo: str, revision: str, root: Path, progress: bool, asked: str,
               files: Iterable[HubFile] = (), kind: str | None = None) -> Path:
    """A hub repository at `revision` into `<root>/hub/<repo>/<commit>`: the registered `files`, or
    for any other repo the files nbkit reads (optional ones skipped when the repo lacks them)."""
    registered = bool(files)
    files = tuple(files) or tuple(HubFile(repo, revision, name) for name in REQUIRED_FILES + OPTIONAL_FILES)
    repo_root = root / "hub" / repo.replace("/", "--")
    _inside(repo_root / "refs", revision, "revision", asked, nested=True)
    commit = revision if _COMMIT.match(revision) else _read_ref(repo_root, revision, asked)
    if commit and _complete(_inside(repo_root, commit, "commit", asked), files):
        return repo_root / commit
    if _offline():
        raise _unavailable(asked, repo_root / (commit or revision), files,
                           "offline mode is on (HF_HUB_OFFLINE/NBKIT_OFFLINE)", kind=kind)
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    url = hf_hub_url(repo, REQUIRED_FILES[0], revision=revision, endpoint=_endpoint())
    try:
        commit = get_hf_file_metadata(url, endpoint=_endpoint()).commit_hash
    except RepositoryNotFoundError:
        raise ModelUnavailableError(f"Model {asked!r}: the hub has no repository {repo!r} (or it is "
                                    "private). Check the name, or pass a local folder.") from None
    except RevisionNotFoundError:
        raise ModelUnavailableError(f"Model {asked!r}: {repo} has no revision {revision!r}.") from None
    except EntryNotFoundError:
        raise ModelUnavailableError(f"Model {asked!r}: {repo}@{revision} has no config.json, so it is not a "
                                    "model nbkit can load (Flax DALL·E mini/Mega, VQGAN or CLIP).") from None
    except Exception as error:  # only the network's and the server's failures are handled
        if (failure := _network_failure(error, url)) is None:
            raise
        raise _unavailable(asked, repo_root / (commit or revision), files, *failure, kind=kind) from error
    if not commit:
        raise ModelUnavailableError(f"Model {asked!r}: the hub at {_endpoint()} did not say which commit "
                                    f"{repo}@{revision} is (no X-Repo-Commit header). Is HF_ENDPOINT a hub?")
    folder = _inside(repo_root, commit, "commit the hub named", asked)
    _write_ref(repo_root, revision, commit)
    pinned = tuple(dataclasses.replace(f, revision=commit) if f.repo == repo else f for f in files)
    _fetch_files(pinned, folder, root, progress, asked, kind)
    if not registered and _needs_word_frequencies(folder):
        verified = _read_verified(folder)
        verified["absent"] = [name for name in verified.get("absent", []) if name != WORD_FREQUENCIES]
        _write_verified(folder, verified)
        _fetch_files((_WORDS,), folder, root, progress, asked, kind)
    return folder


def _needs_word_frequencies(folder: Path) -> bool:
    """DalleBart checkpoints that normalize text need the word list that only the mini repo has."""
    try:
        normalizes = json.loads((folder / "config.json").read_text()).get("normalize_text", False)
    except (OSError, ValueError):
        return False
    return bool(normalizes) and not (folder / WORD_FREQUENCIES).is_file()


def _fetch_files(files: tuple[HubFile, ...], folder: Path, root: Path, progress: bool, asked: str,
                 kind: str | None = None) -> None:
    """Downloads each file `folder` lacks (or holds damaged), checking size and hash; files nbkit
    only reads when present are skipped when the repository lacks them."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError

    folder.mkdir(parents=True, exist_ok=True)
    verified = _read_verified(folder)
    for file in files:
        if _verified_ok(folder, file.filename, verified):
            continue
        if _offline():
            raise _unavailable(asked, folder, files, "offline mode is on (HF_HUB_OFFLINE/NBKIT_OFFLINE)",
                               kind=kind)
        url = hf_hub_url(file.repo, file.filename, revision=file.revision, endpoint=_endpoint())
        try:
            meta = get_hf_file_metadata(url, endpoint=_endpoint())
        except EntryNotFoundError:
            if file.filename in OPTIONAL_FILES:
                verified["absent"] = sorted(set(verified.get("absent", [])) | {file.filename})
                continue
            raise ModelUnavailableError(
                f"{file.repo}@{file.revision} has no {file.filename}, which nbkit needs "
                "(a DALL·E mini/Mega, VQGAN or CLIP checkpoint in Flax format).") from None
        except Exception as error:  # only the network's and the server's failures are handled
            if (failure := _network_failure(error, url)) is None:
                raise
            raise _unavailable(asked, folder, files, *failure, kind=kind) from error
        digest = file.sha256 or meta.etag
        size = meta.size if file.size is None else file.size
        if meta.size is not None and size != meta.size:
            raise CorruptFileError(f"{file.repo}/{file.filename}: the hub says {meta.size} bytes, nbkit's "
                                   f"registry says {size}. The repository changed; pass a revision "
                                   "explicitly.")
        part = _download(meta.location, root / "partial", digest, size, file.filename, progress)
        os.replace(part, folder / file.filename)
        verified[file.filename] = _stamp(folder / file.filename, digest)
        _write_verified(folder, verified)
    verified["complete"] = True
    _write_verified(folder, verified)


def _download(url: str, partial_dir: Path, digest: str, size: int | None, name: str, progress: bool) -> Path:
    """Grows `<digest>.part` to the whole file (continuing a previous attempt) and checks it."""
    from huggingface_hub.file_download import http_get
    from tqdm.auto import tqdm

    partial_dir.mkdir(parents=True, exist_ok=True)
    part = partial_dir / f"{digest}.part"
    with open(part, "ab") as out:
        done = out.tell()
        if size is not None and done > size:
            out.truncate(0)
            done = 0
        http_get(url, out, resume_size=done, expected_size=size, displayed_filename=name,
                 tqdm_class=tqdm if progress else _Silent)
    if _hash(part, digest) != digest:
        part.unlink()
        raise CorruptFileError(f"{name} was downloaded but its content does not match the hub's hash "
                               f"{digest}; the damaged copy was deleted. Run again to download it anew.")
    return part


class _Silent:
    """A progress bar that shows nothing (tests, quiet mode)."""

    def __init__(self, *args, **kwargs):
        pass

    def update(self, n=1):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self):
        pass


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _read_ref(repo_root: Path, revision: str, asked: str) -> str | None:
    """The commit (or W&B version) `revision` pointed to when last seen, checked to be a plain name."""
    ref = repo_root / "refs" / revision
    if not ref.is_file():
        return None
    commit = ref.read_text().strip()
    _inside(repo_root, commit, f"cache record {ref}, which names", asked)
    return commit


def _write_ref(repo_root: Path, revision: str, commit: str) -> None:
    if revision != commit:
        (repo_root / "refs" / revision).parent.mkdir(parents=True, exist_ok=True)
        (repo_root / "refs" / revision).write_text(commit)


# ---------------------------------------------------------------- plain URLs (GitHub release assets)


def _fetch_release(model: RegisteredModel, root: Path, progress: bool) -> Path:
    """A registered model's one file from its URL into `<root>/releases/<name>/<sha256>/`, with the
    hub downloads' progress bar, resume and hash check (the same `_download`)."""
    release = model.release
    folder = root / "releases" / model.name / release.sha256
    verified = _read_verified(folder)
    if verified.get("complete") and _verified_ok(folder, release.filename, verified):
        return folder
    files = (HubFile("", "", release.filename),)
    if _offline():
        raise _unavailable(model.name, folder, files, "offline mode is on (HF_HUB_OFFLINE/NBKIT_OFFLINE)",
                           kind=UPSCALER, url=release.url)
    url = os.environ.get("NBKIT_RELEASES_URL", "").rstrip("/")   # a mirror (tests: a local server)
    url = f"{url}/{release.url.split('/download/', 1)[1]}" if url else release.url
    try:
        part = _download(url, root / "partial", release.sha256, release.size, release.filename, progress)
    except CorruptFileError:
        raise
    except Exception as error:  # only the network's and the server's failures are handled
        if (failure := _network_failure(error, url, server="GitHub")) is None:
            raise
        raise _unavailable(model.name, folder, files, *failure, kind=UPSCALER, url=release.url) from error
    folder.mkdir(parents=True, exist_ok=True)
    os.replace(part, folder / release.filename)
    _write_verified(folder, {release.filename: _stamp(folder / release.filename, release.sha256),
                             "complete": True, "url": release.url})
    return folder


UPSCALER_SUFFIXES = (".pth", ".pt", ".safetensors")


def fetch_upscaler(model: str | Path, cache: str | Path | None = None, progress: bool = True) -> Path:
    """The weights file of an upscaler: a registered name (`esrgan-x4`, … downloaded once, then from the
    cache), a `.pth`/`.safetensors` file, or a folder holding exactly one such file."""
    text = str(model)
    if text in MODELS and not isinstance(model, Path):
        registered = MODELS[text]
        if registered.kind != UPSCALER:
            raise ModelUnavailableError(f"{text!r} is not an upscaler. Use one of: "
                                        + ", ".join(n for n, m in MODELS.items() if m.kind == UPSCALER) + ".")
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
            f"{path} holds no .pth or .safetensors file: give an upscaler's weights file or a name ("
            + ", ".join(n for n, m in MODELS.items() if m.kind == UPSCALER) + ").")
    raise ModelUnavailableError(f"Unknown upscaler {text!r}: give a name ("
                                + ", ".join(n for n, m in MODELS.items() if m.kind == UPSCALER)
                                + "), a .pth / .safetensors file or a folder holding one.")


# ---------------------------------------------------------------- integrity


def _hash(path: Path, digest: str) -> str:
    """sha256 for a 64-hex digest (LFS files); else the git blob sha1 the hub uses as their ETag."""
    if len(digest) == 64:
        hasher = hashlib.sha256()
    else:
        hasher = hashlib.sha1()
        hasher.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 24):
            hasher.update(chunk)
    return hasher.hexdigest()


def _stamp(path: Path, digest: str) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "hash": digest}


def _read_verified(folder: Path) -> dict:
    try:
        return json.loads((folder / VERIFIED_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _write_verified(folder: Path, verified: dict) -> None:
    temporary = folder / (VERIFIED_FILE + ".tmp")
    temporary.write_text(json.dumps(verified, indent=1))
    os.replace(temporary, folder / VERIFIED_FILE)


def _verified_ok(folder: Path, name: str, verified: dict) -> bool:
    """True when the file is as verified; a file changed since is hashed again, and deleted if damaged."""
    stamp, path = verified.get(name), folder / name
    if name in verified.get("absent", ()):
        return True
    if not stamp or not path.is_file():
        return False
    if _stamp(path, stamp["hash"]) == stamp:
        return True
    if path.stat().st_size == stamp["size"] and _hash(path, stamp["hash"]) == stamp["hash"]:
        verified[name] = _stamp(path, stamp["hash"])
        _write_verified(folder, verified)
        return True
    path.unlink()
    del verified[name]
    verified.pop("complete", None)
    _write_verified(folder, verified)
    return False


def _complete(folder: Path, files: tuple[HubFile, ...]) -> bool:
    verified = _read_verified(folder)
    return bool(verified.get("complete")) and all(_verified_ok(folder, f.filename, verified) for f in files)


# ---------------------------------------------------------------- messages


_NETWORK_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN,
                   errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT}


def _connection_errors() -> tuple[type[BaseException], ...]:
    """Failures to reach a server at all, from whichever HTTP library did the asking (only one that
    is imported can have raised)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror, socket.herror]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout")),
                          ("urllib3", ("exceptions.ProtocolError", "exceptions.TimeoutError"))):
        for name in names:
            error = sys.modules.get(module)
            for attribute in name.split("."):
                error = getattr(error, attribute, None)
            if isinstance(error, type) and issubclass(error, BaseException):
                found.append(error)
    return tuple(found)


def _status(error: BaseException) -> int | None:
    status = getattr(getattr(error, "response", None), "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def _causes(error: BaseException):
    """The error and what it wraps (W&B keeps the original in `.exc`), nearest first."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        wrapped = getattr(error, "exc", None)
        error = wrapped if isinstance(wrapped, BaseException) else error.__cause__   # not __context__


class _Failure(NamedTuple):
    why: str        # what happened, for the message
    advice: str     # what to do first


def _network_failure(error: BaseException, url: str | None = None,
                     server: str = "the hub") -> _Failure | None:
    """Why asking the server failed, when it did not answer (the network) or answered with an error
    status, and what to do about it; None for anything else, which is a bug to let through unchanged."""
    for cause in _causes(error):
        if (status := _status(cause)) is not None and status >= 400:
            try:
                phrase = http.HTTPStatus(status).phrase
            except ValueError:
                phrase = "an error"
            where = url or getattr(cause.response, "url", None)
            why = f"{server} answered {status} {phrase}" + (f" for {where}" if where else "")
            if status >= 500:
                return _Failure(why, "Try again later (the server is in trouble)")
            if server == "W&B":
                return _Failure(why, "Check the artifact's name and your access (`wandb login`)")
            return _Failure(why, "Check the name and your access (a gated or private repository needs a "
                                 "token in HF_TOKEN)")
    for cause in _causes(error):
        connection = isinstance(cause, _connection_errors())
        if connection or (isinstance(cause, OSError) and cause.errno in _NETWORK_ERRNOS):
            text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            return _Failure(f"{server} could not be reached ({type(cause).__name__}: {text[:200]})", _CONNECT)
    return None


_CONNECT = "Connect to the internet"


# What to put in a folder, per kind of model, when the cache cannot be filled (never another kind's list).
KIND_FILES = {
    DALLEBART: "config.json, flax_model.msgpack and the tokenizer files (vocab.json, merges.txt, "
               "tokenizer.json, …)",
    VQGAN: "config.json and flax_model.msgpack",
    CLIP: "config.json, flax_model.msgpack, the tokenizer files and preprocessor_config.json",
    TRANSLATOR: "config.json, pytorch_model.bin, source.spm, target.spm and vocab.json",
}
KIND_TITLES = {DALLEBART: "DALL·E model", VQGAN: "VQGAN", CLIP: "CLIP model", UPSCALER: "upscaler",
               TRANSLATOR: "translator"}


def _unavailable(asked: str, folder: Path, files: Iterable[HubFile], why: str,
                 advice: str = _CONNECT, kind: str | None = None,
                 url: str | None = None) -> ModelUnavailableError:
    missing = [f.filename for f in files if not (folder / f.filename).is_file()]
    if kind == UPSCALER:
        instead = (f"or download {url or 'its .pth file'} on a machine that is online and give that file's "
                   "path instead of the name")
    else:
        instead = (f"or copy its files ({KIND_FILES.get(kind, 'config.json, flax_model.msgpack, …')}) into "
                   "a folder and give that folder's path instead of the name")
    return ModelUnavailableError(
        f"{KIND_TITLES.get(kind, 'Model')} {asked!r} is not available: {why}, and the cache ({folder}) "
        f"lacks {', '.join(missing) or 'verified copies of its files'}. {advice}, {instead}, or point "
        "NBKIT_CACHE at a cache that has them (e.g. on Google Drive).")


# ---------------------------------------------------------------- W&B


def _fetch_artifact(artifact: WandbArtifact, root: Path, asked: str, progress: bool,
                    kind: str | None = None) -> Path:
    """A W&B artifact into `<root>/wandb/…/<version>`, through the `wandb` package (optional extra)."""
    artifact_root = root / "wandb" / f"{artifact.entity}--{artifact.project}--{artifact.name}"
    _inside(artifact_root, artifact.version, "version", asked)
    version = _read_ref(artifact_root, artifact.version, asked) or artifact.version
    folder = artifact_root / version
    if _read_verified(folder).get("complete") and all((folder / n).is_file() for n in REQUIRED_FILES):
        return folder
    if _offline():
        raise _unavailable(asked, folder, [HubFile("", "", n) for n in REQUIRED_FILES], "offline mode is on",
                           kind=kind)
    try:
        import wandb
    except ImportError:
        raise ModelUnavailableError(
            f"Model {asked!r} is the W&B artifact {artifact.full_name}, which needs the `wandb` package: "
            "pip install 'nbkit[wandb]' (then `wandb login --anonymously`), or download the artifact "
            "elsewhere and pass its folder.") from None
    try:
        remote = wandb.Api().artifact(artifact.full_name)
        folder = _inside(artifact_root, remote.version, "version W&B named", asked)
        partial = _inside(artifact_root, remote.version + ".partial", "version W&B named", asked)
        remote.download(root=str(partial))   # wandb checks each file against the artifact's digests
    except Exception as error:  # only the network's and the server's failures are handled
        if (failure := _network_failure(error, server="W&B")) is None:
            raise
        raise _unavailable(asked, folder, [HubFile("", "", n) for n in REQUIRED_FILES], *failure,
                           kind=kind) from error
    if folder.exists():
        shutil.rmtree(folder)   # an earlier attempt stopped between the move and the record
    os.replace(partial, folder)
    _write_ref(artifact_root, artifact.version, remote.version)
    _write_verified(folder, {"complete": True, "artifact": artifact.full_name, "version": remote.version})
    return folder


def cached_models(cache: str | Path | None = None) -> list[tuple[str, Path, int]]:
    """(source, folder, bytes) for every model folder in the cache."""
    root = model_cache(cache)
    found = []
    for kind in ("hub", "wandb", "releases"):
        for folder in sorted((root / kind).glob("*/*")):
            if folder.is_dir() and (folder / VERIFIED_FILE).is_file():
                size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
                name = folder.parent.name.replace('--', '/')
                found.append((name if kind == "releases" else f"{name}@{folder.name}", folder, size))
    return found


