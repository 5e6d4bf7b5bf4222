"""Whole-or-nothing writes (nbkit/output/atomic.py); their crashes inside a run folder are in test_storage."""

import errno
import os

import pytest

from nbkit.output import atomic
from nbkit.output.atomic import atomic_write


@pytest.mark.parametrize("hard_links", [True, False])
def test_atomic_write_never_overwrites(tmp_path, monkeypatch, hard_links):
    if not hard_links:
        def no_link(src, dst):
            raise OSError(errno.EPERM, "Operation not permitted")
        monkeypatch.setattr(atomic.os, "link", no_link)
    path = tmp_path / "a.png"
    atomic_write(path, b"first")
    with pytest.raises(FileExistsError):
        atomic_write(path, b"second")
    assert path.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["a.png"]  # no temp file left behind


def test_atomic_replace_writes_or_replaces_whole(tmp_path):
    path = tmp_path / "ranking.json"
    atomic.atomic_replace(path, b"first")
    atomic.atomic_replace(path, b"second, longer")
    assert path.read_bytes() == b"second, longer" and os.listdir(tmp_path) == ["ranking.json"]


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_a_crash_while_replacing_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, where):
    path = tmp_path / "ranking.json"
    atomic.atomic_replace(path, b"old ranking")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    atomic.atomic_replace(path, b"new ranking")
    assert synced and path.read_bytes() == b"new ranking"               # flushed to disk before the swap

    def crash(*args):
        raise OSError(errno.EIO, f"crash in {where}")
    monkeypatch.setattr(atomic.os, where, crash)
    with pytest.raises(OSError, match="crash"):
        atomic.atomic_replace(path, b"never seen")
    assert path.read_bytes() == b"new ranking" and os.listdir(tmp_path) == ["ranking.json"]
