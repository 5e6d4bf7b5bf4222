"""`python -m nbkit` (or `nbkit`): generate, vary, extend, fill, reproduce, rerank, download, info, serve.

A command only parses and prints: requests are built by `GenerationRequest` and the edit builders
(`Vary`, `Extend`, `Fill`), runs are saved by `nbkit.output.runs` (its `RunWriter`).

Exit codes: 0 success, 2 bad usage (argparse), 1 failure with one clear line (`--debug`
shows the traceback).

Over 350 lines because every command's parser and printer still live here; splitting them into one module a
command (and the display into its own) is the open part of issue 23.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from pathlib import Path

from nbkit.arguments import add_model_arguments

EPILOG = ("Models: mini, mega, mega-fp16 (W&B), a local folder, a hub id org/name[@revision] "
          "or entity/project/name:version.")
EDIT_MODEL_HELP = "DALL·E model (default: the one the PNG names, else mini)"
OUT_HELP = ("output folder (default: $NBKIT_OUTPUT, else Drive's MyDrive/nbkit/outputs on Colab, else "
            "~/nbkit/outputs)")


def _model_names() -> list[str]:
    """The registered names, read when a parser is made (the registry is not imported at start)."""
    from nbkit.weights.registry import MODELS

    return list(MODELS)


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


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _seed(args: argparse.Namespace) -> int | None:
    from nbkit.generation.request import parse_seed

    return parse_seed(args.seed or "")


def _settings(args: argparse.Namespace):
    from nbkit.generation.sampling import SamplingSettings

    return SamplingSettings(args.temperature, args.top_k, args.top_p, args.condition_scale)


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


def _pipeline_models(args: argparse.Namespace, model: str) -> list[tuple[str, str, str]]:
    from nbkit.weights.registry import DALLEBART, VQGAN

    return [("--model", model, DALLEBART), ("--vqgan", args.vqgan, VQGAN)]


def _pipeline(args: argparse.Namespace, model: str | None = None, dtype: str | None = None):
    """The pipeline, loaded, saying so (`check_models` first, so that nothing is loaded in vain)."""
    import time

    from nbkit.generation.pipeline import Pipeline
    from nbkit.generation.progress import STAGE_TEXT

    model, dtype = model or args.model, dtype or args.dtype
    began = time.perf_counter()
    _say(f"{STAGE_TEXT['loading']}: {model} and {args.vqgan}" + (f" in {dtype}" if dtype else "")
         + " …")
    pipe = Pipeline.from_pretrained(model, args.vqgan, dtype=dtype, cache=args.cache,
                                    compilation_cache=args.compilation_cache)
    _say(f"loaded {pipe.name} in {time.perf_counter() - began:.1f} s")
    return pipe


DECODE_SHARE = 1 / 8     # a bar's share of each image for its decode and save (after its 256 tokens)


class _RunBar:
    """The CLI's view of a run's events: a bar whose label is the event's (`Progress.label`: stage, n of N,
    the time left), which keeps a share of each image for its decode, so that it is not at 100 % while
    pixels are decoded; without a terminal (a log, a pipe) one line per stage of each batch instead."""

    def __init__(self, images: int, length: int):
        from tqdm.auto import tqdm

        self.length, self.extra = length, max(1, round(length * DECODE_SHARE))
        self.total, self.position = images * (length + self.extra), 0
        self.bar = tqdm(total=self.total, file=sys.stderr, disable=None,
                        bar_format="{desc} |{bar}| {percentage:3.0f}%")
        self.said: tuple | None = None
        self.cut_said = False

    def show(self, event, images_done: int, tokens_done: int, stage: str) -> None:
        label = event.label
        self.bar.set_description_str(label, refresh=True)
        position = tokens_done + images_done * self.extra
        self.bar.update(position - self.position)
        self.position = position
        key = (stage, images_done)
        if self.bar.disable and key != self.said:
            _say(label)
        self.said = key

    def cut(self, prompts, limit: int | None) -> None:
        from nbkit.generation.progress import truncation_message

        if prompts and not self.cut_said:
            self.bar.write(f"note: {truncation_message(prompts, limit)}", file=sys.stderr)
            self.cut_said = True

    def close(self) -> None:
        self.bar.close()


def _make(pipe, request, args: argparse.Namespace, what: str):
    """Runs `request` into its run folder with a progress bar; returns the folder."""
    from nbkit.places import output_root

    out = output_root(args.out).resolve()
    with warnings.catch_warnings():      # cut prompts are said once, as a note (`_RunBar.cut`)
        warnings.filterwarnings("ignore", message=r".* are longer than the model's .* were cut")
        return _run_events(pipe, request, args, what, out)


def _run_events(pipe, request, args: argparse.Namespace, what: str, out: Path):
    """`_make`'s loop: each event of the run shown on the bar, the run's folder returned."""
    from nbkit.generation.pipeline import Batch, Done, Progress
    from nbkit.output.runs import Opened, stream_to_folder

    devices = f"{pipe.mesh.devices.size} {pipe.mesh.devices.flat[0].platform} device(s)"
    bar, made, writer = None, 0, None
    length = pipe.model.config.image_length
    limit = getattr(pipe.tokenizer, "max_length", None)
    for event in stream_to_folder(pipe, request, out, grid=args.grid, progress_every=16):
        if isinstance(event, Opened):
            writer = event.writer
            if event.already_complete:
                _say(f"already complete: all {event.already_saved} image(s) of this run "
                     f"(seed {request.seed}) are in {event.folder.path}")
                break
            resumed = f", {event.already_saved} already saved in {event.folder.path}" if event.folder else ""
            _say(f"{what} {event.to_make} image(s){resumed} for {len(request.prompts)} prompt(s) with "
                 f"{pipe.name} on {devices}, seed {request.seed}")
            bar = _RunBar(event.to_make, length)
        elif isinstance(event, Progress):
            bar.cut(event.cut, limit)
            bar.show(event, event.images_done, event.tokens_done, event.stage)
        elif isinstance(event, Batch):
            made += len(event.images)
            bar.show(event, event.images_done, event.images_done * length, "saving")
        elif isinstance(event, Done):
            bar.close()
            timings = event.timings
            _say(f"seed {request.seed}; {made} new image(s) in {timings['total']:.1f} s "
                 f"(tokens {timings['tokens']:.1f} s, pixels {timings['pixels']:.1f} s)")
    return writer.folder


def _translators_wanted(args: argparse.Namespace, texts: list[str]) -> list[tuple[str, str, str]]:
    """The translators `--translate` will load for `texts` (none for English ones), to check up front."""
    from nbkit.text.translate import pick_translator
    from nbkit.weights.registry import MODELS, TRANSLATOR

    other_kind = args.translate in MODELS and MODELS[args.translate].kind != TRANSLATOR
    if args.translate == "off" or other_kind:      # another kind's name: refused when it is used
        return []
    picked = {pick_translator(text) for text in texts if text.strip()} - {None}
    names = sorted(picked) if args.translate == "auto" else [args.translate] if picked else []
    return [("--translate", name, TRANSLATOR) for name in names]


def _generate(args: argparse.Namespace) -> None:
    from nbkit.generation.request import GenerationRequest
    from nbkit.output.runs import save_seamless
    from nbkit.weights.registry import UPSCALER

    # Checked before the models are loaded (and in `main`, a usage error: neither or both sources):
    prompts = read_prompts_file(args.prompts_file) if args.prompts_file is not None else args.prompts
    upscaler = args.upscaler or ("esrgan-x4" if args.upscale else None)
    seed, settings = _seed(args), _settings(args)
    GenerationRequest(prompts, args.n, seed, settings, negative_prompt=args.negative or "")  # the typed text
    texts = [*prompts, args.negative or ""]
    check_models(_pipeline_models(args, args.model) + _translators_wanted(args, texts)
                 + ([("--upscaler", upscaler, UPSCALER)] if upscaler else []), args.cache)
    prompts, negatives, translations = _translated(args, prompts, args.negative or "")
    request = GenerationRequest(prompts, args.n, seed, settings, negative_prompt=negatives,
                                translations=translations)
    pipe = _pipeline(args)
    folder = _make(pipe, request, args, "generating")
    if args.seamless:
        for prompt_index in range(len(request.prompts)):
            _say(f"seamless: {save_seamless(pipe, folder, prompt_index).resolve()}")
    if upscaler is not None:
        _upscale_run(folder, _upscaler(upscaler, args.cache))
    print(folder.path.resolve())


def _upscaler(model: str, cache: str | None):
    """An Upscaler, not loaded."""
    from nbkit.generation.upscale import Upscaler

    return Upscaler(model, cache=cache)


def _tile_bar(what: str):
    """A progress bar over windows (tiles) and the `progress(done, total)` that moves it."""
    from tqdm.auto import tqdm

    bar = tqdm(unit="tile", file=sys.stderr, disable=None, desc=what)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return bar, progress


def _upscale_run(folder, upscaler) -> None:
    """Each image of the run upscaled beside it and listed with the run (`runs.upscale_saved`)."""
    from nbkit.output.runs import upscale_saved

    bar, progress = _tile_bar(f"upscaling with {upscaler.model_name}")
    with bar:
        saved = upscale_saved(folder, upscaler, progress=progress)
    for path in saved:
        _say(f"upscaled: {path.resolve()}")


def _source_path(image: str) -> Path:
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"No image at {path.resolve()}: give a PNG that nbkit saved, or any image "
                                "file (then also --prompt).")
    return path


def _translated(args: argparse.Namespace, prompts: list[str], negative: str):
    """`--translate`: the English prompts and negative prompts to draw, and what was typed (per prompt)."""
    from nbkit.text.translate import translate_prompts

    english, negatives, translations = translate_prompts(list(prompts), negative, args.translate, args.cache)
    for typed, drawn, translation in zip(prompts, english, translations, strict=True):
        if translation is not None:
            _say(f"translated with {translation['translator']}: {typed!r} → {drawn!r}")
    return english, negatives, translations


def _edit_fields(args: argparse.Namespace) -> dict:
    """What every edit takes from the command line (see `nbkit.generation.from_image.Edit`); a typed
    prompt or negative prompt in another language is translated first (`--translate`)."""
    prompt, negative, translation = args.prompt, args.negative, None
    if prompt is not None or negative:
        english, negatives, translations = _translated(args, [prompt or ""], negative or "")
        prompt = english[0] if prompt is not None else None
        negative = negatives[0] if negative else negative
        translation = translations[0]
        if translation is not None and args.prompt is None:    # the source's prompt: only the negative's
            translation = {k: v for k, v in translation.items() if k != "typed_prompt"}
    return {"seed": _seed(args), "prompt": prompt, "negative_prompt": negative, "settings": _settings(args),
            "translation": translation}


def png_model(png: Path) -> str | None:
    """The model a PNG nbkit saved names (None for any other image, or one whose record is unreadable)."""
    from nbkit.output.records import ImageRecord
    from nbkit.png import read_png_metadata

    try:
        return ImageRecord.from_metadata(read_png_metadata(png)).model or None
    except (ValueError, OSError, TypeError, KeyError):
        return None


def _edit_start(args: argparse.Namespace):
    """An edit's source image and its pipeline: `--model`, else the model the PNG names, else mini; every
    model checked before any is loaded."""
    source = _source_path(args.image)
    model = args.model or png_model(source) or "mini"
    if args.model is None and model != "mini":
        _say(f"model: {model} (the one {source.name} names; --model to choose another)")
    texts = [args.prompt or "", args.negative or ""]
    check_models(_pipeline_models(args, model) + _translators_wanted(args, texts), args.cache)
    return source, _pipeline(args, model)


def _vary(args: argparse.Namespace) -> None:
    from nbkit.generation.from_image import Vary

    Vary(keep_rows=args.keep_rows, n_images=args.n, seed=_seed(args), settings=_settings(args))   # checked
    source, pipe = _edit_start(args)
    edit = Vary(keep_rows=args.keep_rows, n_images=args.n, **_edit_fields(args))
    what = f"varying {source.name} (first {args.keep_rows} of 16 rows kept):"
    print(_make(pipe, edit.request(pipe.source(source)), args, what).path.resolve())


def _extend(args: argparse.Namespace) -> None:
    from nbkit.generation.from_image import Extend
    from nbkit.output.runs import extend_to_folder
    from nbkit.places import output_root

    direction, rows = ("down", args.down) if args.down is not None else ("right", args.right)
    Extend(direction=direction, rows=rows, seed=_seed(args), settings=_settings(args))   # checked first
    source, pipe = _edit_start(args)
    edit = Extend(direction=direction, rows=rows, **_edit_fields(args))
    _say(f"extending {source.name} {direction} by {rows} token rows/columns, {args.times} time(s)")
    folder, pieces, stitched = extend_to_folder(pipe, source, edit, output_root(args.out).resolve(),
                                                args.times)
    for piece in pieces:
        _say(f"piece: {piece.resolve()}")
    print(stitched.resolve())


def _fill(args: argparse.Namespace) -> None:
    from nbkit.generation.from_image import Fill
    from nbkit.output.storage import RunFolder

    Fill(region=tuple(args.region), n_images=args.n, seed=_seed(args), settings=_settings(args))
    source, pipe = _edit_start(args)
    edit = Fill(region=tuple(args.region), n_images=args.n, **_edit_fields(args))
    folder = _make(pipe, edit.request(pipe.source(source)), args, f"filling region {args.region} of "
                                                                  f"{source.name}:")
    ranked = sorted(RunFolder.open(folder.path).entries(), key=lambda e: -(e.get("kept_logprob") or 0))
    _say("candidates, most likely first (log-probability of the kept tokens after the region):")
    for entry in ranked:
        _say(f"  {entry['kept_logprob']:10.2f}  {folder.path.resolve() / entry['file']}")
    print(folder.path.resolve())


def _reproduce(args: argparse.Namespace) -> None:
    """Each PNG made again with the model it names (or --model): what was made, whether its tokens are
    the recorded ones and how many pixels differ. Fails (exit 1) when any is outside the README's
    contract: the same tokens, pixels within one level. Indexes are printed as the file names count
    them, from 000."""
    from nbkit.generation.pipeline import Pipeline
    from nbkit.output.records import ImageRecord
    from nbkit.output.runs import is_upscaled, reproduce_png
    from nbkit.png import read_png_metadata
    from nbkit.weights.registry import DALLEBART, VQGAN

    pngs = [_source_path(png) for png in args.pngs]
    records = {png: None if is_upscaled(png) else ImageRecord.from_metadata(read_png_metadata(png))
               for png in pngs}
    wanted = sorted({args.model or record.model for record in records.values() if record is not None})
    check_models([("--model", model, DALLEBART) for model in wanted]
                 + ([("--vqgan", args.vqgan, VQGAN)] if wanted else []), args.cache)
    pipes: dict[tuple[str, str | None], Pipeline] = {}
    failed = 0
    for png in pngs:
        record = records[png]
        shown = png.resolve()
        if record is None:                 # upscaled: made again from its source beside it
            made = reproduce_png(None, png, args.cache)
            print(f"{'reproduced' if made.within_contract else 'DIFFERS'}: {shown}  upscaled again from its "
                  f"source; pixels differ by at most {made.max_difference} level(s)")
            failed += not made.within_contract
            continue
        # the model and the dtype it was made with (in half precision another dtype draws other tokens)
        model, dtype = args.model or record.model, args.dtype or record.dtype
        if (model, dtype) not in pipes:
            pipes[model, dtype] = _pipeline(args, model, dtype)
        made = reproduce_png(pipes[model, dtype], png)
        image = made.image
        verdict = "reproduced" if made.within_contract else "DIFFERS"
        count = len(made.recorded_tokens)
        tokens = (f"all {count} tokens match" if made.tokens_match
                  else f"{made.tokens_differing} of {count} tokens differ")
        print(f"{verdict}: {shown}  prompt {image.prompt_index:03d} {image.prompt!r}, image "
              f"{image.image_index:03d}, seed {image.seed} ({image.dtype}, row {image.batch_row:03d} of a "
              f"batch of {image.batch_size}); {tokens}; {made.pixels_differing} pixel(s) differ by > 0 "
              f"levels (at most {made.most_levels})")
        failed += not made.within_contract
    if failed:
        raise ValueError(f"{failed} of {len(pngs)} image(s) were not reproduced within the contract (the "
                         "same tokens, pixels within one level): see above.")


def _rerank(args: argparse.Namespace) -> None:
    from nbkit.output.rerank import Reranker
    from nbkit.output.runs import rerank_folder
    from nbkit.weights.registry import CLIP

    folder = Path(args.folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"No folder {folder.resolve()}: give a run folder made by `nbkit generate`.")
    found = check_models([("--clip", args.clip, CLIP)], args.cache)
    reranker = Reranker.from_folder(found["--clip"])
    for group in rerank_folder(folder, reranker):
        print(f"prompt {group['prompt_index']:03d} {group['prompt']!r}   (best first: "
              f"{(folder / group['grid']).resolve()})")
        for entry in group["images"]:
            print(f"  {entry['score']:9.4f}  image {entry['image_index']:03d}  "
                  f"{(folder / entry['file']).resolve()}")


def _download(args: argparse.Namespace) -> None:
    """Every name tried, each reported (its folder or why not); exit 1 when any failed."""
    from nbkit.weights import hub
    from nbkit.weights.registry import MODELS, UPSCALER

    failed = []
    for name in args.names:
        try:
            registered = MODELS.get(name)
            folder = (hub.fetch_upscaler(name, args.cache) if registered and registered.kind == UPSCALER
                      else hub.fetch(name, args.cache))
            print(f"{name}: {Path(folder).resolve()}")
        except hub.ModelUnavailableError as error:
            failed.append(name)
            print(f"{name}: FAILED: {error}")
    if failed:
        raise ValueError(f"{len(failed)} of {len(args.names)} model(s) could not be downloaded "
                         f"({', '.join(failed)}): see above.")


def _info(args: argparse.Namespace) -> None:
    """What is here, fast: no model is loaded (nor is a weights file opened)."""
    from nbkit import __version__
    from nbkit.generation.device import detect
    from nbkit.places import model_cache, output_root
    from nbkit.weights import hub
    from nbkit.weights.registry import translators_summary, upscalers_summary

    print(f"nbkit {__version__}")
    print(detect().summary())
    print(f"outputs:      {output_root().resolve()} (--out, $NBKIT_OUTPUT)")
    root = model_cache(args.cache)
    cached = hub.cached_models(root)
    print(f"cache:        {root.resolve()} ({len(cached)} model folder(s); --cache, $NBKIT_CACHE)")
    for source, folder, size in cached:
        print(f"  {source}  {size / 1e9:.2f} GB  {folder}")
    print(upscalers_summary())
    print(translators_summary())


def _upscale(args: argparse.Namespace) -> None:
    from nbkit.output.upscaled import upscale_files
    from nbkit.weights.registry import UPSCALER

    check_models([("--model", args.model, UPSCALER)], args.cache)
    upscaler = _upscaler(args.model, args.cache)   # loaded after every image has been read
    bar, progress = _tile_bar(f"upscaling with {args.model}")
    with bar:
        for path in upscale_files(upscaler, args.images, args.out, progress):
            print(path.resolve())


def _add_making_arguments(command: argparse.ArgumentParser, grid: bool = True, model: str | None = "mini",
                          model_help: str | None = None) -> None:
    """The model, seed, sampling and output options every command that makes images shares."""
    add_model_arguments(command, model=model, model_help=model_help)
    command.add_argument("--seed", help="same seed, same image tokens: 0 to 4294967295 (default: random, "
                                        "printed)")
    command.add_argument("--temperature", type=float, metavar="T",
                         help="sampling temperature: above 1 more varied, below 1 more conservative "
                              "(default: the model's, 1)")
    command.add_argument("--top-k", type=int, metavar="K",
                         help="draw each token from the K likeliest only (default: the model's, 50)")
    command.add_argument("--top-p", type=float, metavar="P",
                         help="draw each token from the likeliest ones that together reach probability P, "
                              "0 < P ≤ 1 (default: off)")
    command.add_argument("--condition-scale", type=float, default=10.0,
                         help="super-conditioning (default 10)")
    command.add_argument("--negative", default=None, metavar="TEXT",
                         help="what the images should not show (in place of the empty prompt in "
                              "super-conditioning)")
    command.add_argument("--translate", default="auto", metavar="auto|off|NAME",
                         help="prompts not in English: auto (default) picks an opus-mt translator from the "
                              "script, off draws them as typed, NAME a translator (translate-zh, a folder, a "
                              "hub id); English prompts load nothing")
    command.add_argument("--out", metavar="DIR", help=OUT_HELP)
    if grid:
        command.add_argument("--grid", action="store_true", help="also save a captioned grid per prompt")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="nbkit", description="DALL·E mini / Mega text-to-image, in JAX.",
                                   epilog=EPILOG)
    main.add_argument("--debug", action="store_true", help="show tracebacks")
    main.add_argument("--cache",
                      help="model cache folder (default: $NBKIT_CACHE, Drive, ~/.cache/nbkit/models)")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="make images from prompts and save them", epilog=EPILOG)
    generate.add_argument("prompts", nargs="*", metavar="PROMPT",
                          help="what to draw, in quotes, one image set per prompt (or --prompts-file)")
    generate.add_argument("--prompts-file", metavar="FILE",
                          help="read the prompts from a UTF-8 text file, one per line (blank lines skipped)")
    generate.add_argument("-n", type=int, default=1, help="images per prompt (default 1)")
    generate.add_argument("--upscale", action="store_true",
                          help="also upscale each image, saved beside it (--upscaler, default esrgan-x4)")
    generate.add_argument("--upscaler", metavar="NAME",
                          help="the upscaler for --upscale (implies it): esrgan-x4 (default), esrgan-anime, "
                               "esrgan-x2, esrgan-fast, or a .pth / .safetensors file")
    generate.add_argument("--seamless", action="store_true",
                          help="also decode each prompt's images as one seamless picture (the most square "
                               "full grid: 4 → 2×2, 8 → 4×2, 3 → 3×1)")
    _add_making_arguments(generate)
    generate.set_defaults(run=_generate)

    vary = commands.add_parser("vary", help="variations of an image: keep its first rows, draw the rest",
                               epilog=EPILOG)
    vary.add_argument("image", metavar="IMAGE", help="a PNG nbkit saved, or any image (then --prompt)")
    vary.add_argument("-n", type=int, default=4, help="how many variations (default 4)")
    vary.add_argument("--keep-rows", type=int, default=8,
                      help="rows of 16 kept from the top (default 8; 0 = new images, 16 = the image itself)")
    vary.add_argument("--prompt", help="what to draw (default: the prompt the PNG was made with)")
    _add_making_arguments(vary, model=None, model_help=EDIT_MODEL_HELP)
    vary.set_defaults(run=_vary)

    extend = commands.add_parser("extend", help="continue an image down or to the right", epilog=EPILOG)
    extend.add_argument("image", metavar="IMAGE", help="a PNG nbkit saved, or any image (then --prompt)")
    way = extend.add_mutually_exclusive_group(required=True)
    way.add_argument("--down", type=int, metavar="R", help="add R rows of tokens (16 px each) below, 1–15")
    way.add_argument("--right", type=int, metavar="R", help="add R columns of tokens on the right, 1–15")
    extend.add_argument("--times", type=int, default=1, help="extend again from each new piece (a panorama)")
    extend.add_argument("--prompt", help="what to draw (default: the prompt the PNG was made with)")
    _add_making_arguments(extend, grid=False, model=None, model_help=EDIT_MODEL_HELP)
    extend.set_defaults(run=_extend)

    fill = commands.add_parser("fill", help="draw a region of an image anew (inpainting, best effort)",
                               epilog=EPILOG)
    fill.add_argument("image", metavar="IMAGE", help="a PNG nbkit saved, or any image (then --prompt)")
    fill.add_argument("--region", type=int, nargs=4, required=True,
                      metavar=("TOP", "LEFT", "BOTTOM", "RIGHT"),
                      help="token cells (16 px each, 0–16) to draw anew: rows TOP..BOTTOM-1, "
                           "columns LEFT..RIGHT-1")
    fill.add_argument("-n", type=int, default=8, help="candidates to draw and rank (default 8)")
    fill.add_argument("--prompt", help="what to draw (default: the prompt the PNG was made with)")
    _add_making_arguments(fill, model=None, model_help=EDIT_MODEL_HELP)
    fill.set_defaults(run=_fill)

    reproduce = commands.add_parser("reproduce", help="make saved PNGs again and check them against the "
                                                      "files (same tokens, pixels within one level)",
                                    epilog=EPILOG)
    reproduce.add_argument("pngs", nargs="+", metavar="PNG", help="images nbkit saved")
    add_model_arguments(reproduce, model=None)
    reproduce.set_defaults(run=_reproduce)

    rerank = commands.add_parser("rerank", help="score a run folder's images with CLIP, best first")
    rerank.add_argument("folder", metavar="DIR", help="a run folder (the path `generate` printed)")
    rerank.add_argument("--clip", default="clip-b32",
                        help="CLIP model (default clip-b32; clip-l14 is better)")
    rerank.set_defaults(run=_rerank)

    download = commands.add_parser("download", help="fetch models into the cache (for offline use)",
                                   epilog="Models: " + ", ".join(_model_names()) + ".")
    download.add_argument("names", nargs="+", metavar="NAME",
                          help="models to fetch, each tried and reported: " + ", ".join(_model_names())
                               + ", or a hub id org/name[@revision]")
    download.set_defaults(run=_download)

    upscale = commands.add_parser("upscale", help="make pictures 4× (or 2×) larger with Real-ESRGAN, saved "
                                  "beside them")
    upscale.add_argument("images", nargs="+", metavar="IMAGE", help="PNG (or JPEG, WebP…) files")
    upscale.add_argument("--model", default="esrgan-x4",
                         help="esrgan-x4 (default), esrgan-anime, esrgan-x2, esrgan-fast, or a .pth / "
                              ".safetensors file")
    upscale.add_argument("--out", metavar="DIR", help="folder to save into (default: beside each image)")
    upscale.set_defaults(run=_upscale)

    info = commands.add_parser("info", help="devices, recommended dtype and model, output folder and cache "
                                            "contents (loads no model)")
    info.set_defaults(run=_info)

    serve = commands.add_parser("serve", help="a web page and an HTTP API, shared by many people",
                                epilog=EPILOG)
    _add_serve_arguments(serve)
    serve.set_defaults(run=_serve)
    return main


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    from nbkit.server.command import add_arguments

    add_arguments(parser)


def _serve(args: argparse.Namespace) -> None:
    from nbkit.server.command import run

    run(args)


def main(argv: list[str] | None = None) -> int:
    command_line = parser()
    args = command_line.parse_args(argv)
    if args.command == "generate" and (args.prompts_file is None) == (not args.prompts):
        command_line.error("generate: give PROMPT arguments or --prompts-file FILE (one of them)")
    try:
        args.run(args)
    except KeyboardInterrupt:
        print("nbkit: interrupted (finished images are saved; run the same command to resume)",
              file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            traceback.print_exc()
        message = str(error).strip() or type(error).__name__
        print(f"nbkit: error: {message}", file=sys.stderr)
        return 1
    return 0
