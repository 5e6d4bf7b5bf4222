"""What a model folder's files were checked to be: the hash the hub publishes (sha256 for LFS files, the
git blob sha1 otherwise) and, once checked, a record in the folder's `.nbkit-files.json` (size,
mtime, hash per file; `absent` for optional files the repository lacks; `complete` once all are in).

A file whose size and mtime still match its record is taken as verified without reading it; one
changed since (same size or not) is hashed again and deleted if damaged, so that it is downloaded anew.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from nbkit.weights.registry import HubFile

VERIFIED_FILE = ".nbkit-files.json"


def file_hash(path: Path, digest: str) -> str:
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


def stamp(path: Path, digest: str) -> dict:
    """The record of a file verified to have `digest`: its size and mtime now, and the digest."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "hash": digest}


def read_verified(folder: Path) -> dict:
    """The folder's record ({} when it has none or it is not JSON: then everything is checked anew)."""
    try:
        return json.loads((folder / VERIFIED_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_verified(folder: Path, verified: dict) -> None:
    temporary = folder / (VERIFIED_FILE + ".tmp")
    temporary.write_text(json.dumps(verified, indent=1))
    os.replace(temporary, folder / VERIFIED_FILE)


def verified_ok(folder: Path, name: str, verified: dict) -> bool:
    """True when the file is as verified; a file changed since is hashed again, and deleted if damaged."""
    recorded, path = verified.get(name), folder / name
    if name in verified.get("absent", ()):
        return True
    if not recorded or not path.is_file():
        return False
    if stamp(path, recorded["hash"]) == recorded:
        return True
    if path.stat().st_size == recorded["size"] and file_hash(path, recorded["hash"]) == recorded["hash"]:
        verified[name] = stamp(path, recorded["hash"])
        write_verified(folder, verified)
        return True
    path.unlink()
    del verified[name]
    verified.pop("complete", None)
    write_verified(folder, verified)
    return False


def complete(folder: Path, files: tuple[HubFile, ...]) -> bool:
    """Whether the folder was filled to the end and each of `files` is still as verified."""
    verified = read_verified(folder)
    return bool(verified.get("complete")) and all(verified_ok(folder, f.filename, verified) for f in files)
