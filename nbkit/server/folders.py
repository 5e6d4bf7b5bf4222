"""What the server reads from the output folder: run folders by plain name, images only as manifests
list them. Nothing a request says reaches outside the output folder: a run is a plain folder name
directly in it, an image a file its run's manifest lists (`RunFolder.image_path`). Nor does anything a
record says: the source an edited image names (`edit_source`) is taken only as such a run and file.

Errors are `BadInput` (protocol.py) so that the HTTP side answers them like any other bad field.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nbkit.checks import is_whole_number
from nbkit.generation.from_image import GRID_SIDE
from nbkit.generation.token_grids import DIRECTIONS
from nbkit.output.records import UPSCALED_FROM
from nbkit.output.storage import MANIFEST, RUN_FILE, RunFolder
from nbkit.server.protocol import BadInput, plain_name

EDITS = ("vary", "extend", "fill")


@dataclasses.dataclass(frozen=True)
class EditSource:
    """The saved image an edited one was made from, as clients are told of it (the HTTP side adds its
    URL), so that a reopened run shows what the page showed right after the edit: its run and file, the
    edit (`edit`: vary, extend or fill), an extension's `direction` and `rows` (rows or columns added), a
    variation's `rows` (rows kept)."""

    run: str
    file: str
    edit: str
    direction: str | None = None
    rows: int | None = None


@dataclasses.dataclass(frozen=True)
class SavedImage:
    """One saved image, as clients are told of it (the HTTP side adds its URL). `batch`: the batch that
    made it now, None for one saved earlier."""

    run: str
    file: str
    prompt: str | None
    prompt_index: int | None
    image_index: int | None
    seed: int | None
    batch: int | None = None
    upscaled_from: str | None = None     # an upscaled copy: the file (in the same run) it was made from
    edited_from: EditSource | None = None   # an edit's source image, when it is still in the output folder


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """One run as /api/runs lists it. `damaged`: what is wrong in its run.json or manifest lines (a crash,
    an edit), one sentence each; the images that can still be read are listed all the same."""

    name: str
    created: str | None
    prompts: list
    images: list[SavedImage]
    damaged: list[str] = dataclasses.field(default_factory=list)


def saved_images(folder: RunFolder, upscaled: bool = False,
                 sources: dict[tuple[str, str], bool] | None = None) -> list[SavedImage]:
    """A run folder's images that are really there, in (prompt, image) order; with `upscaled`, each
    upscaled copy too, after the image it was made from. `sources`: which edit sources were found, kept
    across calls (`edit_source`)."""
    found = []
    sources = {} if sources is None else sources
    for entry in folder.entries(upscaled):
        try:
            if folder.image_path(entry).is_file():
                found.append(saved_image(folder, entry, sources))
        except ValueError:
            continue
    return sorted(found, key=lambda image: (_number(image.prompt_index), _number(image.image_index),
                                            image.upscaled_from is not None))


def saved_image(folder: RunFolder, entry: dict,
                sources: dict[tuple[str, str], bool] | None = None) -> SavedImage:
    """A manifest entry as clients are told of it (an edit's source checked in the folder's output
    folder: runs are folders directly in it)."""
    source = entry.get(UPSCALED_FROM)
    edited = None if UPSCALED_FROM in entry else edit_source(folder.path.parent, entry.get("source"), sources)
    return SavedImage(folder.path.name, entry["file"], entry.get("prompt"), entry.get("prompt_index"),
                      entry.get("image_index"), entry.get("seed"),
                      upscaled_from=source.get("file") if isinstance(source, dict) else None,
                      edited_from=edited)


def edit_source(out: Path, source: Any,
                found: dict[tuple[str, str], bool] | None = None) -> EditSource | None:
    """The image a record's `source` says it was edited from, or None. Records are untrusted (a PNG's
    metadata, a manifest anyone may edit): only `"<run>/<file>"` (as the server records it) of plain
    names whose image that run of `out` lists and holds is taken — no path leads out of the output
    folder — with the edit's own fields checked; anything else is ignored. `found`: the (run, file)
    pairs looked up already, and whether each was there (one look a source, however many use it)."""
    if not isinstance(source, Mapping):
        return None
    name, edit = source.get("file"), source.get("edit")
    if not isinstance(name, str) or name.count("/") != 1 or edit not in EDITS:
        return None
    run, file = name.split("/")
    direction, rows = None, None
    if edit == "extend":
        direction, rows = source.get("direction"), source.get("rows")
        if direction not in DIRECTIONS or not _whole_in(rows, 1, GRID_SIDE - 1):
            return None
    elif edit == "vary":
        rows = source.get("keep_rows")
        if not _whole_in(rows, 0, GRID_SIDE):
            return None
    found = {} if found is None else found
    if (run, file) not in found:
        try:
            resolve_image(out, run, file, upscaled=False)
            found[(run, file)] = True
        except BadInput:
            found[(run, file)] = False
    return EditSource(run, file, edit, direction, rows) if found[(run, file)] else None


def _whole_in(value: Any, low: int, high: int) -> bool:
    return is_whole_number(value) and low <= value <= high


_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s'\"/]+/)+(?P<name>[^\s'\"/]+)")


def for_clients(message: str, out: Path, other_paths: bool = True) -> str:
    """An error message as a client may see it: paths in the output folder relative to it (as /api/runs
    names runs and files), and with `other_paths`, any other absolute path cut to its last name (where
    the server keeps its files is not the client's business; the server's log keeps the whole message)."""
    for prefix in {str(out.resolve()), str(out.absolute()), str(out)}:
        if prefix not in ("", ".", "/"):
            message = message.replace(prefix + "/", "").replace(prefix, "the output folder")
    return _ABSOLUTE_PATH.sub(lambda match: match["name"], message) if other_paths else message


def _number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def resolve_run(out: Path, name: Any, field: str = "run") -> RunFolder:
    """The run folder `name` directly in `out`, or BadInput (400 for a name that is not plain, 404 for
    no such run)."""
    if not plain_name(name):
        raise BadInput(field, f"{field} must be a run folder's plain name, as /api/runs lists them "
                              f"(got {name!r}).")
    path = out / name
    if not path.is_dir() or path.is_symlink() or path.resolve().parent != out.resolve():
        raise BadInput(field, f"{field}: there is no run {name!r} in the output folder.", 404)
    return RunFolder(path)


def resolve_image(out: Path, run: Any, file: Any, field: str = "file", upscaled: bool = True) -> Path:
    """A saved image's path: `file` must be listed in `run`'s manifest and be a file directly in it
    (`upscaled` False: an image made from tokens, not an upscaled copy)."""
    folder = resolve_run(out, run, "run" if field == "file" else field)
    if not plain_name(file):
        raise BadInput(field, f"{field} must be an image's plain file name (got {file!r}).")
    for entry in folder.entries(upscaled):
        if entry.get("file") == file:
            try:
                path = folder.image_path(entry)
            except ValueError:
                break
            if path.is_file():
                return path
            break
    raise BadInput(field, f"{field}: run {run!r} has no image {file!r}.", 404)


def list_runs(out: Path, limit: int) -> list[RunSummary]:
    """The newest `limit` run folders in `out`, newest first, with their saved images. A run whose
    run.json or manifest is damaged is listed with what is wrong (`damaged`), never left to fail the
    list; a folder with neither file is not a run."""
    found = []
    for child in (out.iterdir() if out.is_dir() else ()):
        if plain_name(child.name) and child.is_dir() and not child.is_symlink():
            folder = RunFolder(child)
            if not (child / RUN_FILE).exists() and not (child / MANIFEST).is_file():
                continue
            info = folder.info()
            found.append((str(info.get("created") or ""), child.name, info))
    found.sort(reverse=True)
    listed, sources = [], {}
    for created, name, info in found[:limit]:
        folder = RunFolder(out / name)
        try:
            listed.append(RunSummary(name, created or None, list(info.get("prompts", [])),
                                     saved_images(folder, upscaled=True, sources=sources), folder.damage()))
        except OSError as error:          # a folder removed or unreadable while it was listed
            listed.append(RunSummary(name, created or None, [], [], [f"unreadable: {error.strerror}"]))
    return listed
