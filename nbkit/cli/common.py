"""What several commands share: reading a prompts file, the options typed into a spec's fields, every
model checked (found or downloaded) before any is loaded, loading the pipeline, an edit's source image,
translating typed prompts (saying so) and the upscaler's tile bar."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MAX_PROMPTS_FILE_BYTES = 1 << 20     # a prompts file is text typed by a person: 1 MiB is thousands of lines


def read_prompts_file(path: str | Path) -> list[str]:
    """One prompt per line (surrounding spaces dropped, blank lines skipped), from a UTF-8 text file."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_PROMPTS_FILE_BYTES + 1)
    except OSError as error:
        raise ValueError(f"Cannot read the prompts file {path}: {error.strerror or error}. Give a text "
                         "file with one prompt per line.") from error
    if len(data) > MAX_PROMPTS_FILE_BYTES:
        raise ValueError(f"The prompts file {path} is over {MAX_PROMPTS_FILE_BYTES >> 20} MiB: give a text "
                         "file with one prompt per line.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"The prompts file {path} is not UTF-8 text (byte {error.start}): save it as "
                         "UTF-8, one prompt per line.") from error
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"The prompts file {path} has no prompts: write one prompt per line.")
    return prompts


def say(text: str) -> None:
    print(text, file=sys.stderr)


def spec_fields(args: argparse.Namespace) -> dict:
    """What every spec takes from the options: the count, the seed and the sampling settings."""
    from nbkit.generation.request import parse_seed
    from nbkit.generation.sampling import SamplingSettings

    return {"n_images": getattr(args, "n", 1), "seed": parse_seed(args.seed or ""),
            "settings": SamplingSettings(args.temperature, args.top_k, args.top_p, args.condition_scale)}


class ModelsMissing(ValueError):
    """Models a command needs that cannot be had, all of them, each with the flag that chooses it."""


def check_models(wanted: list[tuple[str, str, str]], cache: str | None) -> dict[str, Path]:
    """Every model of `wanted` ((flag, name, kind) each) found or downloaded into the cache before any is
    loaded, so that one run reports every model that is missing, each with the flag to set; returns
    flag → folder (or weights file, for an upscaler)."""
    from nbkit.weights import hub
    from nbkit.weights.registry import UPSCALER

    found, problems = {}, []
    for flag, name, kind in wanted:
        try:
            found[flag] = (hub.fetch_upscaler(name, cache) if kind == UPSCALER
                           else hub.fetch(name, cache, kind=kind))
        except hub.ModelUnavailableError as error:
            problems.append(f"{flag} {name}: {error}")
    if len(problems) == 1:
        raise ModelsMissing(problems[0])
    if problems:
        raise ModelsMissing(f"{len(problems)} models cannot be had (nothing was loaded); set each flag named "
                            "to a model that is here:\n  " + "\n  ".join(problems))
    return found


def pipeline_models(args: argparse.Namespace, model: str) -> list[tuple[str, str, str]]:
    from nbkit.weights.registry import DALLEBART, VQGAN

    return [("--model", model, DALLEBART), ("--vqgan", args.vqgan, VQGAN)]


def translators_wanted(args: argparse.Namespace, texts: list[str]) -> list[tuple[str, str, str]]:
    """The translators `--translate` will load for `texts` (none for English ones), to check up front."""
    from nbkit.text.translate import pick_translator
    from nbkit.weights.registry import MODELS, TRANSLATOR

    other_kind = args.translate in MODELS and MODELS[args.translate].kind != TRANSLATOR
    if args.translate == "off" or other_kind:      # another kind's name: refused when it is used
        return []
    picked = {pick_translator(text) for text in texts if text.strip()} - {None}
    names = sorted(picked) if args.translate == "auto" else [args.translate] if picked else []
    return [("--translate", name, TRANSLATOR) for name in names]


def load_pipeline(args: argparse.Namespace, model: str | None = None, dtype: str | None = None,
                  storage: str | None = None):
    """The pipeline, loaded, saying so (`check_models` first, so that nothing is loaded in vain).
    `storage`: how to keep the weights (default --weight-storage, else float32), refused before
    anything loads when the dtype it runs in (the device's when none is chosen) cannot have it."""
    import time

    from nbkit.arguments import storage_problem
    from nbkit.generation.pipeline import Pipeline
    from nbkit.generation.progress import STAGE_TEXT

    model, dtype = model or args.model, dtype or args.dtype
    storage = storage or getattr(args, "weight_storage", None) or "float32"
    if storage != "float32":
        from nbkit.generation.device import detect

        runs_in = dtype or str(detect().recommended_dtype)
        problem = storage_problem(storage, runs_in)
        if problem:
            default = "" if dtype else f" ({runs_in} is this device's default)"
            raise ValueError(f"--weight-storage {storage}: {problem}{default}: add --dtype float32, or "
                             "choose --weight-storage float32.")
    began = time.perf_counter()
    say(f"{STAGE_TEXT['loading']}: {model} and {args.vqgan}" + (f" in {dtype}" if dtype else "")
        + (f", weights kept as {storage}" if storage != "float32" else "") + " …")
    pipe = Pipeline.from_pretrained(model, args.vqgan, dtype=dtype, cache=args.cache,
                                    compilation_cache=args.compilation_cache, weight_storage=storage)
    kept = f", weights kept as {pipe.weight_storage}" if storage != "float32" else ""
    say(f"loaded {pipe.name} in {time.perf_counter() - began:.1f} s{kept}")
    return pipe


def translated(args: argparse.Namespace, spec):
    """`--translate`: the spec with its typed prompts in English, each translation said."""
    from nbkit.generation.specs import Generate

    english = spec.translated(args.translate, args.cache)
    if isinstance(english, Generate):
        pairs = zip(spec.prompts, english.prompts, english.translations, strict=True)
    else:
        pairs = [(spec.prompt or "", english.prompt or "", english.translation)]
    for typed, drawn, translation in pairs:
        if translation is not None:
            say(f"translated with {translation['translator']}: {typed!r} → {drawn!r}")
    return english


def source_path(image: str) -> Path:
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"No image at {path.resolve()}: give a PNG that nbkit saved, or any image "
                                "file (then also --prompt).")
    return path


def png_model(png: Path) -> str | None:
    """The model a PNG nbkit saved names (None for any other image, or one whose record is unreadable)."""
    from nbkit.output.records import ImageRecord
    from nbkit.png import read_png_metadata

    try:
        return ImageRecord.from_metadata(read_png_metadata(png)).model or None
    except (ValueError, OSError, TypeError, KeyError):
        return None


def edit_start(args: argparse.Namespace, spec):
    """An edit's source image and its pipeline (`--model`, else the model the PNG names, else mini; every
    model checked before any is loaded), and the spec with its typed texts translated."""
    source = source_path(args.image)
    model = args.model or png_model(source) or "mini"
    if args.model is None and model != "mini":
        say(f"model: {model} (the one {source.name} names; --model to choose another)")
    check_models(pipeline_models(args, model) + translators_wanted(args, spec.texts), args.cache)
    pipe = load_pipeline(args, model)
    return named_in_outputs(source, pipe, args), pipe, translated(args, spec)


def named_in_outputs(path: Path, pipe, args: argparse.Namespace):
    """A source that is an image of a run in `--out`, opened and named "<run>/<file>" as the server names
    it, so that the run made from it says what it was made from (the page shows a reopened extension
    joined to its source); any other image stays a path, opened when the run starts."""
    import dataclasses

    from nbkit.places import output_root

    resolved = path.resolve()
    if resolved.parent.parent != output_root(args.out).resolve():
        return path
    return dataclasses.replace(pipe.source(path), name=f"{resolved.parent.name}/{resolved.name}")


def upscaler(model: str, cache: str | None):
    """An Upscaler, not loaded."""
    from nbkit.generation.upscale import Upscaler

    return Upscaler(model, cache=cache)


def tile_bar(what: str):
    """A progress bar over windows (tiles) and the `progress(done, total)` that moves it."""
    from tqdm.auto import tqdm

    bar = tqdm(unit="tile", file=sys.stderr, disable=None, desc=what)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return bar, progress
