"""Where generated images go, written so that nothing is ever lost or overwritten.

Each run gets its own folder, `root/<YYYY-MM-DD_HHMMSS>_<slug>`, made with mkdir(exist_ok=False).
An image is first written whole under a name no other file has (`atomic_write`), THEN one line
is appended to `manifest.jsonl`: the manifest is the record of what is done. `run.json` holds
a `run_key` (a hash of prompts, seed, n_images, model and settings) and the number of images
expected, so rerunning the same batch after a crash reopens the newest unfinished folder with
that key (or, if all are finished, the newest one) (`RunFolder.resume_or_create`) and skips the images its
manifest already lists.
Files named in the manifest are read through `RunFolder.image_path`, which refuses any name that is not a
file directly in the folder. Derived files (a ranking) are replaced whole with `atomic_replace`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import stat
import tempfile
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nbkit import __version__
from nbkit.arguments import DTYPES
from nbkit.generation.request import TRANSLATION_KEYS, TRANSLATION_TEXT_LIMIT
from nbkit.output.images import make_grid
from nbkit.png import png_bytes, read_png_metadata, utf8_safe

MANIFEST = "manifest.jsonl"
UPSCALED_FROM = "upscaled_from"      # the key of an upscaled image's source, in its PNG and manifest entry
RUN_FILE = "run.json"
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}
_NO_HARD_LINKS = {errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}
_MAX_SUFFIX = 10_000  # -2, -3, … tried before giving up
# Bounds on what a record read from a file may say (PNG metadata and manifests are untrusted): far above
# any run, and small enough that nothing built from a record can take long or much memory.
INDEX_LIMIT = 2**20          # prompt and image indexes
TOKENS_LIMIT = 2**16         # image tokens recorded with one image
BATCH_LIMIT = 1024           # the rows of the batch an image was drawn in (reproduce pads to that many)
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


def _settings_items(settings: Any) -> tuple[tuple[str, Any], ...]:
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        settings = dataclasses.asdict(settings)  # e.g. a SamplingSettings
    items = settings.items() if isinstance(settings, Mapping) else settings
    out = []
    for key, value in items:
        value = value.item() if isinstance(value, np.generic) else value
        if not isinstance(key, str) or not (value is None or isinstance(value, (bool, int, float, str))):
            raise ValueError(f"Setting {key!r}={value!r}: settings map names to numbers, strings or None.")
        out.append((key, value))
    return tuple(sorted(out, key=lambda item: item[0]))


def run_key(prompts: Sequence[str], seed: int, n_images: int, model: str, settings: Any,
            negative_prompts: Sequence[str] = (), kept: Sequence[str | None] = ()) -> str:
    """Identifies a batch: the same prompts, seed, count, model, settings, negative prompts and kept
    tokens (a hash per prompt, or None) give the same key (empty negative prompts and nothing kept leave
    it as it was before they existed)."""
    batch = {"prompts": list(prompts), "seed": seed, "n_images": n_images, "model": model,
             "settings": dict(_settings_items(settings))}
    if any(negative_prompts):
        batch["negative_prompts"] = list(negative_prompts)
    if any(kept):
        batch["kept"] = list(kept)
    return hashlib.sha256(json.dumps(batch, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ImageRecord:
    """What produced one image: enough to find it again when a run is resumed, and to make it again.

    `tokens` are the image's identity: the same request gives the same 256 tokens on any device
    count (pixels may differ by one level where the VQGAN's float sums run in another order).
    They depend on the PRNG implementation, so the jax version and its `jax_threefry_partitionable`
    setting are recorded with them.
    """

    prompt: str
    prompt_index: int  # position of the prompt in the batch
    image_index: int  # which image of that prompt
    seed: int
    model: str
    settings: tuple[tuple[str, Any], ...] = ()  # given as a mapping (or dataclass); kept as sorted pairs
    nbkit_version: str = __version__
    tokens: tuple[int, ...] = ()  # the image tokens (256 for the published models)
    jax_version: str | None = None
    jax_threefry_partitionable: bool | None = None
    negative_prompt: str = ""
    kept_mask: str = ""          # positions kept rather than drawn (hex, raster order); "" for none
    source: Mapping[str, Any] | None = None   # what the image started from (file, tokens_sha256, edit…)
    kept_logprob: float | None = None         # how likely the model found the kept tokens after a hole
    replica: str = ""                         # the server replica that made it ("" in this process)
    translation: Mapping[str, str] | None = None   # typed prompt, translator, revision (nbkit.text.translate)
    # The batch it was drawn in: its rows (padding included) and the image's row. In bfloat16 and float16
    # a product's last bits depend on its shape, so `reproduce` draws it again in that shape; None: a PNG
    # saved before nbkit recorded it (drawn alone again, the float32 contract).
    batch_size: int | None = None
    batch_row: int | None = None
    dtype: str | None = None     # the compute dtype it was drawn in: `reproduce` uses it unless told another

    def __post_init__(self):
        object.__setattr__(self, "settings", _settings_items(self.settings))
        if self.batch_size is not None or self.batch_row is not None:
            size, row = self.batch_size, self.batch_row
            if not (_whole(size, 1, BATCH_LIMIT + 1) and _whole(row, 0, size)):
                raise ValueError(f"batch_size must be a whole number from 1 to {BATCH_LIMIT} and batch_row "
                                 f"one below it (got {size!r} and {row!r}).")
        if self.dtype not in (None, *DTYPES):
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}.")
        if not isinstance(self.tokens, (list, tuple)) or len(self.tokens) > TOKENS_LIMIT:
            raise ValueError(f"tokens must be a list of at most {TOKENS_LIMIT} image codes.")
        object.__setattr__(self, "tokens", tuple(int(token) for token in self.tokens))
        for name in ("prompt_index", "image_index", "seed"):
            value = getattr(self, name)
            whole = not isinstance(value, bool) and isinstance(value, (int, np.integer))
            if not whole or (name != "seed" and not 0 <= value < INDEX_LIMIT):
                bounds = "" if name == "seed" else f" in [0, {INDEX_LIMIT})"
                raise ValueError(f"{name} must be a whole number{bounds}, got {value!r}.")
            object.__setattr__(self, name, int(value))
        if self.translation is not None:
            known = TRANSLATION_KEYS
            if not isinstance(self.translation, Mapping) or not all(
                    key in known and isinstance(value, str) and len(value) <= TRANSLATION_TEXT_LIMIT
                    for key, value in self.translation.items()):
                raise ValueError(f"translation must map {', '.join(known)} to strings, got "
                                 f"{self.translation!r}.")
            object.__setattr__(self, "translation", dict(self.translation))
        if not isinstance(self.replica, str):
            raise ValueError(f"replica must be a string, got {self.replica!r}.")
        if not isinstance(self.prompt, str) or not isinstance(self.model, str):
            raise ValueError(f"prompt and model must be strings, got {self.prompt!r} and {self.model!r}.")

    @property
    def key(self) -> tuple:
        # prompt_index is part of it: a prompt given twice in one batch makes two sets of images.
        return (self.prompt, self.prompt_index, self.seed, self.image_index, self.model, self.settings)

    def to_metadata(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "prompt_index": self.prompt_index, "image_index": self.image_index,
                "seed": self.seed, "model": self.model, "settings": dict(self.settings),
                "nbkit_version": self.nbkit_version, "tokens": list(self.tokens),
                "jax_version": self.jax_version,
                "jax_threefry_partitionable": self.jax_threefry_partitionable,
                "negative_prompt": self.negative_prompt,
                **({"kept_mask": self.kept_mask, "source": dict(self.source or {}),
                    "kept_logprob": self.kept_logprob} if self.kept_mask else {}),
                **({"replica": self.replica} if self.replica else {}),
                **({"translation": dict(self.translation)} if self.translation else {}),
                **({"batch_size": self.batch_size, "batch_row": self.batch_row}
                   if self.batch_size is not None else {}),
                **({"dtype": self.dtype} if self.dtype is not None else {})}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ImageRecord:
        try:
            return cls(**{f.name: metadata[f.name] for f in dataclasses.fields(cls) if f.name in metadata})
        except TypeError as error:
            raise ValueError(f"Not an image record: {error!r} in {dict(metadata)!r}.") from error


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < high


def entry_problem(entry: Any) -> str | None:
    """What is wrong with a manifest entry as readers take it (None: nothing): a file name, and for an
    image made from tokens its prompt (text), prompt and image index (whole numbers) and seed. Manifests
    are untrusted (a crash, an edit): readers skip or refuse what this names instead of failing on it."""
    if not isinstance(entry, Mapping):
        return "it is not a JSON object"
    if not isinstance(entry.get("file"), str):
        return f"its file is {entry.get('file')!r}, not a file name"
    if UPSCALED_FROM in entry:
        return None if isinstance(entry[UPSCALED_FROM], Mapping) else f"its {UPSCALED_FROM} is not an object"
    if not isinstance(entry.get("prompt"), str):
        return f"its prompt is {type(entry.get('prompt')).__name__}, not text"
    for name in ("prompt_index", "image_index"):
        if not _whole(entry.get(name), 0, INDEX_LIMIT):
            return f"its {name} is {entry.get(name)!r}, not a whole number from 0 to {INDEX_LIMIT - 1}"
    if "seed" in entry and not _whole(entry["seed"], -2**63, 2**64):
        return f"its seed is {entry['seed']!r}, not a whole number"
    tokens = entry.get("tokens", [])
    if not isinstance(tokens, list) or len(tokens) > TOKENS_LIMIT:
        return "its tokens are not a list of image codes"
    return None


def info_problem(info: Any) -> str | None:
    """What is wrong with a run.json's contents as readers take them (None: nothing)."""
    if not isinstance(info, Mapping):
        return "it is not a JSON object"
    prompts = info.get("prompts", [])
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        return "its prompts are not a list of texts"
    for name in ("run_key", "created"):
        if info.get(name) is not None and not isinstance(info.get(name), str):
            return f"its {name} is {type(info.get(name)).__name__}, not text"
    expected = info.get("expected_images")
    if expected is not None and not _whole(expected, 0, INDEX_LIMIT):
        return f"its expected_images is {expected!r}, not a whole number"
    return None


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

    @classmethod
    def resume_or_create(cls, root: Path, prompts: Sequence[str], run_key: str,
                         expected_images: int) -> RunFolder:
        """`find`, else a new folder."""
        return cls.find(root, run_key) or cls.create(root, prompts, run_key, expected_images)

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
