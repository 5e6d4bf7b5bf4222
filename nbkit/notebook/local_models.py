"""Models already on this machine, for the form's Model and Upscaler fields to offer beside the registered
names: DALL·E checkpoint folders and upscaler weights files in the model cache and the working folder.
Only file names and one small config.json are read; nothing is loaded."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path

CONFIG_LIMIT = 1 << 20      # a DALL·E config.json is a few KB: a bigger file is not one
MOST = 20                   # per place: a long list helps nobody pick


def _depths(root: Path, pattern: str, deepest: int) -> Iterable[Path]:
    """`pattern` under `root`, then under each folder below it, down to `deepest` levels in all (no hidden
    folders: glob's `*` skips them)."""
    for depth in range(deepest):
        yield from sorted(root.glob("/".join(["*"] * depth + [pattern])))


def is_dalle_folder(folder: Path) -> bool:
    """A DALL·E (DalleBart) checkpoint: config.json of model_type "dallebart" and flax_model.msgpack (the
    VQGAN and CLIP folders have both files too, with another model_type)."""
    config = folder / "config.json"
    with contextlib.suppress(OSError, ValueError):
        if (folder / "flax_model.msgpack").is_file() and config.stat().st_size <= CONFIG_LIMIT:
            values = json.loads(config.read_text(encoding="utf8"))
            return isinstance(values, dict) and values.get("model_type") == "dallebart"
    return False


def _shown(path: Path, here: Path) -> str:
    """A path as the field shows it: ./name under the working folder (what the README writes), else whole."""
    with contextlib.suppress(ValueError):
        return "./" + path.relative_to(here).as_posix()
    return str(path)


def model_folders(cache: Path, here: Path | None = None) -> list[str]:
    """DALL·E checkpoint folders in the working folder (./mini, ./models/mini) and the model cache (its
    hub/<name>/<revision> folders), working folder first; downloads under way (*.partial) left out."""
    here = (here or Path.cwd()).resolve()
    found: list[str] = []
    for root, deepest in ((here, 2), (cache, 3)):
        with contextlib.suppress(OSError):
            folders = [config.parent for config in _depths(root, "*/config.json", deepest)]
            kept = [folder for folder in folders if not folder.name.endswith(".partial")
                    and is_dalle_folder(folder)][:MOST]
            found += [name for name in (_shown(path.resolve(), here) for path in kept) if name not in found]
    return found


def upscaler_files(cache: Path, here: Path | None = None) -> list[str]:
    """Upscaler weights (.pth, .safetensors whose path names esrgan or upscal) in the working folder and the
    model cache, working folder first."""
    here = (here or Path.cwd()).resolve()
    found: list[str] = []
    for root, deepest in ((here, 2), (cache, 3)):
        with contextlib.suppress(OSError):
            files = [path for suffix in ("*.pth", "*.safetensors") for path in _depths(root, suffix, deepest)]
            named = sorted(path for path in files if path.is_file() and any(
                word in path.relative_to(root).as_posix().lower() for word in ("esrgan", "upscal")))[:MOST]
            found += [name for name in (_shown(path.resolve(), here) for path in named) if name not in found]
    return found


def names_the_loaded(typed: str, loaded: str) -> bool:
    """Whether the Model field's text names the model already loaded: the same name, or a path to the folder
    that the pipeline records absolutely (./mini and /home/me/mini are one model, loaded once)."""
    if typed == loaded:
        return True
    with contextlib.suppress(OSError, ValueError):
        return Path(loaded).is_absolute() and Path(typed).expanduser().resolve() == Path(loaded)
    return False
