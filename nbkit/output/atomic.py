"""Files written whole or not at all: what every writer of run folders and upscaled PNGs uses.

`atomic_write` never replaces an existing file (an image, run.json); `atomic_replace` replaces a derived
file whole (ranking.json); `sweep_temporaries` removes what a crash left between the two steps of either.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from datetime import datetime, timezone
from pathlib import Path

_NO_HARD_LINKS = {errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}


def atomic_write(path: Path, data: bytes) -> None:
    """Writes `data` to `path` whole or not at all, and never replaces an existing file.

    The bytes go to a hidden temp file in the same folder (flushed and fsynced), which is then
    hard-linked to `path`: link() fails with FileExistsError if `path` exists, atomically.
    Where hard links are not supported (e.g. Google Drive's FUSE mount), the name is first
    reserved with open(O_CREAT | O_EXCL), which also fails if `path` exists, and the temp file
    then replaces only that empty placeholder of ours. A crash in between leaves an empty file
    at `path`, never a half-written one or someone else's file overwritten.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    placeholder = False
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(tmp, path)
        except OSError as error:
            if isinstance(error, FileExistsError) or error.errno not in _NO_HARD_LINKS:
                raise
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            placeholder = True
            os.replace(tmp, path)
            placeholder = False
    except BaseException:
        if placeholder:
            path.unlink(missing_ok=True)
        raise
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_replace(path: Path, data: bytes) -> None:
    """Writes `data` to `path` whole, replacing what is there: for derived files (ranking.json) that a
    rerun recomputes. Readers see the old file or the new one, never a mix or nothing (a temp file in
    the same folder, flushed and fsynced, then os.replace)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


# What `atomic_write` and `atomic_replace` name their temporary files (tempfile.mkstemp's 8 characters).
TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")
STALE_AFTER_S = 3600.0       # a temporary file this old is no write in progress: a crash's leftover


def sweep_temporaries(root: Path, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Removes what a crash (kill -9) in `atomic_write`/`atomic_replace` left: hidden temporary files
    named as they name them, older than `older_than_s`, in `root` and in the run folders directly in
    it; nothing else (no other names, no links, nothing deeper or outside). Returns what it removed."""
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir() or root.is_symlink():
        return removed
    cutoff = datetime.now(timezone.utc).timestamp() - older_than_s
    folders = [root] + [child for child in root.iterdir() if child.is_dir() and not child.is_symlink()]
    for folder in folders:
        with contextlib.suppress(OSError):
            for child in folder.iterdir():
                if not TEMPORARY_NAME.fullmatch(child.name):
                    continue
                with contextlib.suppress(OSError):
                    info = child.lstat()
                    if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                        child.unlink()
                        removed.append(child)
    return removed
