"""Models from the Hugging Face hub: a repository at a revision into `<cache>/hub/<org>--<name>/<commit>/`.

The revision is pinned to the commit the hub names (remembered in `refs/`, so a cached branch needs no
network); each file is fetched through `download` (resume, hash check) and recorded in the folder's
`.nbkit-files.json` (`verify`). A repository that is not registered gets the files nbkit reads, the
optional ones skipped where it lacks them; a DalleBart that normalizes text gets the word list from the
mini repository when its own lacks it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from nbkit.weights.cache_folders import inside, offline, read_ref, write_ref
from nbkit.weights.download import download
from nbkit.weights.errors import (
    OFFLINE,
    CorruptFileError,
    ModelUnavailableError,
    network_failure,
    unavailable,
)
from nbkit.weights.registry import WORD_FREQUENCIES, WORDS_FILE, HubFile
from nbkit.weights.verify import complete, read_verified, stamp, verified_ok, write_verified

# What nbkit reads from a model folder; the first two are needed, the rest are read when present.
REQUIRED_FILES = ("config.json", "flax_model.msgpack")
OPTIONAL_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                  "special_tokens_map.json", "preprocessor_config.json", WORD_FREQUENCIES)
HUB_ID = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(@(?P<revision>[\w./-]+))?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _names(files: Iterable[HubFile]) -> list[str]:
    return [file.filename for file in files]


def endpoint() -> str:
    """The hub asked (HF_ENDPOINT; tests point it at a local stand-in)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def fetch_repo(repo: str, revision: str, root: Path, progress: bool, asked: str,
               files: Iterable[HubFile] = (), kind: str | None = None) -> Path:
    """A hub repository at `revision` into `<root>/hub/<repo>/<commit>`: the registered `files`, or
    for any other repo the files nbkit reads (optional ones skipped when the repo lacks them)."""
    registered = bool(files)
    files = tuple(files) or tuple(HubFile(repo, revision, name) for name in REQUIRED_FILES + OPTIONAL_FILES)
    repo_root = root / "hub" / repo.replace("/", "--")
    inside(repo_root / "refs", revision, "revision", asked, nested=True)
    commit = revision if _COMMIT.match(revision) else read_ref(repo_root, revision, asked)
    if commit and complete(inside(repo_root, commit, "commit", asked), files):
        return repo_root / commit
    if offline():
        raise unavailable(asked, repo_root / (commit or revision), _names(files), OFFLINE, kind=kind)
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    url = hf_hub_url(repo, REQUIRED_FILES[0], revision=revision, endpoint=endpoint())
    try:
        commit = get_hf_file_metadata(url, endpoint=endpoint()).commit_hash
    except RepositoryNotFoundError:
        raise ModelUnavailableError(f"Model {asked!r}: the hub has no repository {repo!r} (or it is "
                                    "private). Check the name, or pass a local folder.") from None
    except RevisionNotFoundError:
        raise ModelUnavailableError(f"Model {asked!r}: {repo} has no revision {revision!r}.") from None
    except EntryNotFoundError:
        raise ModelUnavailableError(f"Model {asked!r}: {repo}@{revision} has no config.json, so it is not a "
                                    "model nbkit can load (Flax DALL·E mini/Mega, VQGAN or CLIP).") from None
    except Exception as error:  # only the network's and the server's failures are handled
        if (failure := network_failure(error, url)) is None:
            raise
        raise unavailable(asked, repo_root / (commit or revision), _names(files), *failure,
                          kind=kind) from error
    if not commit:
        raise ModelUnavailableError(f"Model {asked!r}: the hub at {endpoint()} did not say which commit "
                                    f"{repo}@{revision} is (no X-Repo-Commit header). Is HF_ENDPOINT a hub?")
    folder = inside(repo_root, commit, "commit the hub named", asked)
    write_ref(repo_root, revision, commit)
    pinned = tuple(dataclasses.replace(f, revision=commit) if f.repo == repo else f for f in files)
    fetch_files(pinned, folder, root, progress, asked, kind)
    if not registered and _needs_word_frequencies(folder):
        verified = read_verified(folder)
        verified["absent"] = [name for name in verified.get("absent", []) if name != WORD_FREQUENCIES]
        write_verified(folder, verified)
        fetch_files((WORDS_FILE,), folder, root, progress, asked, kind)
    return folder


def _needs_word_frequencies(folder: Path) -> bool:
    """DalleBart checkpoints that normalize text need the word list that only the mini repo has."""
    try:
        normalizes = json.loads((folder / "config.json").read_text()).get("normalize_text", False)
    except (OSError, ValueError):
        return False
    return bool(normalizes) and not (folder / WORD_FREQUENCIES).is_file()


def fetch_files(files: tuple[HubFile, ...], folder: Path, root: Path, progress: bool, asked: str,
                kind: str | None = None) -> None:
    """Downloads each file `folder` lacks (or holds damaged), checking size and hash; files nbkit
    only reads when present are skipped when the repository lacks them."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError

    folder.mkdir(parents=True, exist_ok=True)
    verified = read_verified(folder)
    for file in files:
        if verified_ok(folder, file.filename, verified):
            continue
        if offline():
            raise unavailable(asked, folder, _names(files), OFFLINE, kind=kind)
        url = hf_hub_url(file.repo, file.filename, revision=file.revision, endpoint=endpoint())
        try:
            meta = get_hf_file_metadata(url, endpoint=endpoint())
        except EntryNotFoundError:
            if file.filename in OPTIONAL_FILES:
                verified["absent"] = sorted(set(verified.get("absent", [])) | {file.filename})
                continue
            raise ModelUnavailableError(
                f"{file.repo}@{file.revision} has no {file.filename}, which nbkit needs "
                "(a DALL·E mini/Mega, VQGAN or CLIP checkpoint in Flax format).") from None
        except Exception as error:  # only the network's and the server's failures are handled
            if (failure := network_failure(error, url)) is None:
                raise
            raise unavailable(asked, folder, _names(files), *failure, kind=kind) from error
        digest = file.sha256 or meta.etag
        size = meta.size if file.size is None else file.size
        if meta.size is not None and size != meta.size:
            raise CorruptFileError(f"{file.repo}/{file.filename}: the hub says {meta.size} bytes, nbkit's "
                                   f"registry says {size}. The repository changed; pass a revision "
                                   "explicitly.")
        part = download(meta.location, root / "partial", digest, size, file.filename, progress)
        os.replace(part, folder / file.filename)
        verified[file.filename] = stamp(folder / file.filename, digest)
        write_verified(folder, verified)
    verified["complete"] = True
    write_verified(folder, verified)
