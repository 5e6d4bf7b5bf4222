"""Run folders: where generated images go, written so that nothing is ever lost or overwritten.

Each run gets its own folder, `root/<YYYY-MM-DD_HHMMSS>_<slug>`, made with mkdir(exist_ok=False).
An image is first written whole under a name no other file has (`atomic_write`), THEN one line
is appended to `manifest.jsonl`: the manifest is the record of what is done. `run.json` holds
a `run_key` (a hash of prompts, seed, n_images, model and settings: `nbkit.output.records`) and the
number of images expected, so rerunning the same batch after a crash finds the newest unfinished folder
with that key (or, if all are finished, the newest one) with `RunFolder.find` (`RunWriter.open` does,
and makes a new folder only where none is found), and skips the images its manifest already lists.
Files named in the manifest are read through `RunFolder.image_path`, which refuses any name that is not a
file directly in the folder. Derived files (a ranking) are replaced whole with `atomic_replace`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nbkit import __version__
from nbkit.output.atomic import atomic_write
from nbkit.output.images import make_grid
from nbkit.output.records import UPSCALED_FROM, ImageRecord, entry_problem, info_problem
from nbkit.png import png_bytes, read_png_metadata, utf8_safe

MANIFEST = "manifest.jsonl"
RUN_FILE = "run.json"
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}
_MAX_SUFFIX = 10_000  # -2, -3, … tried before giving up
_NOT_JSON = object()         # a manifest line that is not JSON


def slugify(text: str, max_length: int = 40) -> str:
    """A short, safe ASCII piece of a file name from any prompt; never empty, never a path."""
    if max_length < 1:
        raise ValueError(f"max_length must be ≥ 1, got {max_length}.")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9._]+", "-", ascii_text.lower()).strip(".-")[:max_length].strip(".-")
    slug = slug or "prompt"[:max_length]
    if slug.split(".")[0].upper() in _WINDOWS_RESERVED:
        slug = ("_" + slug)[:max_length].rstrip(".-")  # "_con" is an ordinary name on Windows too
    return slug


def _inside(folder: Path, name: str) -> Path:
    path = folder / name
    if path.resolve().parent != folder.resolve():
        raise ValueError(f"Refusing to write {name!r}: it would land outside {folder}.")
    return path


def _suffixed(stem: str, ext: str = ""):
    yield stem + ext
    for n in range(2, _MAX_SUFFIX):
        yield f"{stem}-{n}{ext}"


def edit_suffix(source: Mapping[str, Any] | None) -> str:
    """What an edit run's folder name ends with, so that it says what it is: `vary8` (rows kept),
    `right8` / `down4` (rows or columns added), `fill`; "" for a run drawn from prompts alone."""
    edit = (source or {}).get("edit")
    if edit == "vary" and isinstance(source.get("keep_rows"), int):
        return f"vary{source['keep_rows']}"
    if (edit == "extend" and source.get("direction") in ("down", "right")
            and isinstance(source.get("rows"), int)):
        return f"{source['direction']}{source['rows']}"
    return "fill" if edit == "fill" else ""


def new_run_folder(root: Path, prompts: Sequence[str], now: datetime | None = None, suffix: str = "") -> Path:
    """Creates and returns a new, empty folder for one run, inside `root` (made if missing), named
    `<date>_<time>_<prompt>` and `_<suffix>` when given (an edit's, `edit_suffix`).
    Two runs never share a folder: an existing name gets a -2, -3, … suffix."""
    if isinstance(prompts, str) or not prompts:
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}.")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = f"{(now or datetime.now()):%Y-%m-%d_%H%M%S}_{slugify(prompts[0])}"
    if suffix:
        base += f"_{slugify(suffix, 16)}"
    for name in _suffixed(base):
        try:
            _inside(root, name).mkdir(exist_ok=False)
            return root / name
        except FileExistsError:
            continue
    raise FileExistsError(f"Could not find a free folder name for {base} in {root}.")


class RunFolder:
    """One run's folder: its images, grids, manifest.jsonl and run.json. All writes go here."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, root: Path, prompts: Sequence[str], run_key: str | None = None,
               expected_images: int | None = None, now: datetime | None = None,
               name_from: str | None = None, suffix: str = "") -> RunFolder:
        """A new run folder, named after `name_from` (default: the first prompt) and `suffix`."""
        folder = cls(new_run_folder(root, [name_from] if name_from else prompts, now, suffix))
        info = {"run_key": run_key, "expected_images": expected_images, "prompts": list(prompts),
                "created": datetime.now(timezone.utc).isoformat(), "nbkit_version": __version__}
        atomic_write(folder.path / RUN_FILE, json.dumps(info, ensure_ascii=True, indent=1).encode())
        return folder

    @classmethod
    def open(cls, path: Path) -> RunFolder:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"No run folder at {path}.")
        return cls(path)

    @classmethod
    def find(cls, root: Path, run_key: str) -> RunFolder | None:
        """The folder under `root` made for this `run_key` (the newest unfinished one, else the newest
        finished one: the same batch again has nothing left to make), or None. Creates nothing."""
        return cls.index(root).get(run_key)

    @classmethod
    def index(cls, root: Path) -> dict[str, RunFolder]:
        """Every run key under `root` → its folder, chosen as `find` chooses: one scan of the run.json
        files, for a server that then keeps the index in memory instead of scanning per request."""
        best: dict[str, tuple] = {}
        for child in (Path(root).iterdir() if Path(root).is_dir() else ()):
            if child.is_dir() and not child.is_symlink():
                folder = cls(child)
                info = folder.info()
                key = info.get("run_key")
                if isinstance(key, str):
                    created = str(info.get("created", ""))
                    rank = (not folder.is_complete(), created, len(child.name), child.name)
                    if key not in best or rank > best[key][0]:
                        best[key] = (rank, folder)
        return {key: folder for key, (_, folder) in best.items()}

    def remove_if_empty(self) -> bool:
        """Removes this folder if it holds nothing but its run.json (a run that ended before its first
        image); True if it did. A folder with anything else in it is left as it is."""
        try:
            if {child.name for child in self.path.iterdir()} - {RUN_FILE}:
                return False
            (self.path / RUN_FILE).unlink(missing_ok=True)
            self.path.rmdir()
        except OSError:
            return False
        return True

    def info(self) -> dict[str, Any]:
        """run.json's contents ({} if missing, unreadable or of the wrong shape: see `info_problem`)."""
        info = self.raw_info()
        return info if isinstance(info, dict) and info_problem(info) is None else {}

    def raw_info(self) -> Any:
        """run.json's JSON as it is (None if missing or not JSON), for readers that say what is wrong."""
        try:
            return utf8_safe(json.loads((self.path / RUN_FILE).read_bytes()))
        except (OSError, ValueError, RecursionError):
            return None

    def damage(self) -> list[str]:
        """What is wrong in this run's run.json and manifest lines, one sentence each ([]: nothing)."""
        problems = []
        info = self.raw_info()
        if info is None and (self.path / RUN_FILE).exists():
            problems.append(f"{RUN_FILE}: it is not readable JSON")
        elif info is not None and info_problem(info):
            problems.append(f"{RUN_FILE}: {info_problem(info)}")
        for number, entry in enumerate(self._manifest_lines(), 1):
            # a line that is not JSON is a write cut short by a crash: skipped, as `entries` does
            problem = None if entry is _NOT_JSON else entry_problem(entry)
            if problem:
                problems.append(f"{MANIFEST} line {number}: {problem}")
        return problems

    def _manifest_lines(self) -> list[Any]:
        try:
            lines = (self.path / MANIFEST).read_bytes().splitlines()
        except FileNotFoundError:
            return []
        parsed = []
        for line in lines:
            if not line.strip():
                continue
            try:
                parsed.append(utf8_safe(json.loads(line)))
            except (ValueError, RecursionError):
                parsed.append(_NOT_JSON)
        return parsed

    def entries(self, upscaled: bool = False) -> list[dict[str, Any]]:
        """The manifest's entries: the images made (what resuming, grids and reranking read), and with
        `upscaled` also the upscaled copies listed beside them (entries with `UPSCALED_FROM`: a gallery
        shows them, nothing makes them again from the request). A damaged line (a write cut short by a
        crash, or one of the wrong shape: `entry_problem`) is skipped; `damage` names it."""
        return [entry for entry in self._manifest_lines() if entry is not _NOT_JSON
                and entry_problem(entry) is None and (upscaled or UPSCALED_FROM not in entry)]

    def image_path(self, entry: Mapping[str, Any]) -> Path:
        """Where the manifest `entry`'s file is: every reader of a manifest's "file" goes through here.
        Raises ValueError (naming the file and the manifest) unless it is a plain name of a file directly
        in this folder: no separators, `..` or absolute paths, no link leading out of the folder."""
        name = entry.get("file") if isinstance(entry, Mapping) else None
        manifest = self.path / MANIFEST
        if not isinstance(name, str):
            raise ValueError(f"{manifest}: an entry has no file name ({name!r}); remove that line.")
        path = self.path / name
        plain = (name not in ("", ".", "..") and "\0" not in name and not any(s in name for s in ("/", "\\"))
                 and not os.path.isabs(name))
        if not plain or path.resolve().parent != self.path.resolve():
            raise ValueError(f"{manifest} lists {name!r}, which is not a file directly in {self.path}: "
                             "refusing to read it. The manifest is damaged or was edited; remove that line.")
        return path

    def saved_keys(self) -> set[tuple]:
        keys = set()
        for entry in self.entries():
            try:
                keys.add(ImageRecord.from_metadata(entry).key)
            except ValueError:
                continue
        return keys

    def is_complete(self) -> bool:
        expected = self.info().get("expected_images")
        return isinstance(expected, int) and len(self.saved_keys()) >= expected

    def _holds(self, path: Path, record: ImageRecord) -> bool:
        try:
            return ImageRecord.from_metadata(read_png_metadata(path)).key == record.key
        except (OSError, ValueError):
            return False

    def _append_manifest(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=True) + "\n"
        with open(_inside(self.path, MANIFEST), "a+b") as file:
            if file.seek(0, os.SEEK_END) > 0:
                file.seek(-1, os.SEEK_END)
                if file.read(1) != b"\n":
                    line = "\n" + line  # keep a crash's cut-short line apart from this one
            file.write(line.encode("ascii"))
            file.flush()
            os.fsync(file.fileno())

    def write_png(self, stem: str, data: bytes, record: ImageRecord | None = None) -> Path:
        """Writes stem.png, or stem-2.png, … if taken (an image of `record` found there is kept)."""
        for candidate in _suffixed(stem, ".png"):
            path = self.path / candidate
            if os.path.lexists(path):
                if record is not None and not path.is_symlink() and self._holds(path, record):
                    return path  # written before a crash cut off its manifest line
                continue
            try:
                atomic_write(_inside(self.path, candidate), data)
                return path
            except FileExistsError:
                continue
        raise FileExistsError(f"Could not find a free file name for {stem}.png in {self.path}.")

    def save_image(self, image: np.ndarray, record: ImageRecord) -> Path:
        """Saves one image as a PNG with its record; one saved before (the same record's key in the
        manifest) is not saved again, and its path is returned all the same."""
        for entry in self.entries():
            with contextlib.suppress(ValueError):
                if ImageRecord.from_metadata(entry).key == record.key:
                    return self.image_path(entry)
        metadata = record.to_metadata()
        stem = f"{record.prompt_index:03d}_{slugify(record.prompt)}_s{record.seed}_{record.image_index:03d}"
        path = self.write_png(stem, png_bytes(image, metadata), record)
        self._append_manifest({"file": path.name, **metadata})
        return path

    def list_upscaled(self, path: Path, metadata: Mapping[str, Any]) -> None:
        """Lists an upscaled PNG already written in this folder (`nbkit.output.upscaled`) in the manifest,
        once, so that it is served and shown as one of the run's images; `metadata` holds UPSCALED_FROM."""
        path = _inside(self.path, Path(path).name)
        if UPSCALED_FROM not in metadata:
            raise ValueError(f"{path.name}: an upscaled image's entry must name its source.")
        if not any(entry.get("file") == path.name for entry in self.entries(upscaled=True)):
            self._append_manifest({"file": path.name, **metadata})

    def save_grid(self, images: Sequence[np.ndarray], prompt: str, prompt_index: int) -> Path:
        """Saves one prompt's images as a captioned grid; never replaces an earlier grid."""
        metadata = {"kind": "grid", "prompt": prompt, "prompt_index": prompt_index,
                    "nbkit_version": __version__}
        data = png_bytes(make_grid(images, caption=prompt), metadata)
        return self.write_png(f"{prompt_index:03d}_{slugify(prompt)}_grid", data)
