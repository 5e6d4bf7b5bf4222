"""`python -m nbkit` (or `nbkit`): generate, vary, extend, fill, reproduce, rerank, download, info, serve.

A command only parses and prints: requests are built by `GenerationRequest` and the edit builders
(`Vary`, `Extend`, `Fill`), runs are saved by `nbkit.output.runs` (its `RunWriter`).

Exit codes: 0 success, 2 bad usage (argparse), 1 failure with one clear line (`--debug`
shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from nbkit.arguments import add_model_arguments

EPILOG = ("Models: mini, mega, mega-fp16 (W&B), a local folder, a hub id org/name[@revision] "
          "or entity/project/name:version.")


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


def _seed(args: argparse.Namespace) -> int | None:
    from nbkit.generation.request import parse_seed

    return parse_seed(args.seed or "")


def _settings(args: argparse.Namespace):
    from nbkit.generation.sampling import SamplingSettings

    return SamplingSettings(args.temperature, args.top_k, args.top_p, args.condition_scale)


def _pipeline(args: argparse.Namespace, model: str | None = None, dtype: str | None = None):
    from nbkit.generation.pipeline import Pipeline

    return Pipeline.from_pretrained(model or args.model, args.vqgan, dtype=dtype or args.dtype,
                                    cache=args.cache, compilation_cache=args.compilation_cache)


def _make(pipe, request, args: argparse.Namespace, what: str):
    """Runs `request` into its run folder with a progress bar; returns the folder."""
    from tqdm.auto import tqdm

    from nbkit.generation.pipeline import Batch, Done, Progress
    from nbkit.output.runs import Opened, stream_to_folder
    from nbkit.places import output_root

    devices = f"{pipe.mesh.devices.size} {pipe.mesh.devices.flat[0].platform} device(s)"
    bar, made, writer = None, 0, None
    length = pipe.model.config.image_length
    for event in stream_to_folder(pipe, request, output_root(args.out), grid=args.grid, progress_every=16):
        if isinstance(event, Opened):
            writer = event.writer
            if event.already_complete:
                print(f"already complete: all {event.already_saved} image(s) of this run "
                      f"(seed {request.seed}) are in {event.folder.path}", file=sys.stderr)
                break
            resumed = f", {event.already_saved} already saved in {event.folder.path}" if event.folder else ""
            print(f"{what} {event.to_make} image(s){resumed} for {len(request.prompts)} prompt(s) with "
                  f"{args.model} on {devices}, seed {request.seed}", file=sys.stderr)
            bar = tqdm(total=event.to_make * length, unit="token", file=sys.stderr, disable=None,
                       desc="compiling (first batch only)")
        elif isinstance(event, Progress):
            bar.set_description("compiling (first batch only)" if event.compiling else "drawing image tokens")
            bar.update(event.tokens_done - bar.n)
        elif isinstance(event, Batch):
            made += len(event.images)
            bar.update(event.images_done * length - bar.n)
        elif isinstance(event, Done):
            bar.close()
            timings = event.timings
            print(f"seed {request.seed}; {made} new image(s) in {timings['total']:.1f} s "
                  f"(tokens {timings['tokens']:.1f} s, pixels {timings['pixels']:.1f} s)", file=sys.stderr)
    return writer.folder


def _generate(args: argparse.Namespace) -> None:
    from nbkit.generation.request import GenerationRequest
    from nbkit.output.runs import save_seamless

    # Checked before the models are loaded (and in `main`, a usage error: neither or both sources):
    prompts = read_prompts_file(args.prompts_file) if args.prompts_file is not None else args.prompts
    prompts, negatives, translations = _translated(args, prompts, args.negative or "")
    request = GenerationRequest(prompts, args.n, _seed(args), _settings(args),
                                negative_prompt=negatives, translations=translations)
    upscaler = _upscaler(args.upscale, args.cache, check=True) if args.upscale else None   # loaded after
    pipe = _pipeline(args)
    folder = _make(pipe, request, args, "generating")
    if args.seamless:
        for prompt_index in range(len(request.prompts)):
            print(f"seamless: {save_seamless(pipe, folder, prompt_index)}", file=sys.stderr)
    if upscaler is not None:
        _upscale_run(folder, upscaler)
    print(folder.path)


def _upscaler(model: str, cache: str | None, check: bool = False):
    """An Upscaler, not loaded. `check`: anything but a registered upscaler's name must be a weights file
    or folder that is there, which is found out now (before anything is made), not after a run."""
    from nbkit.generation.upscale import Upscaler
    from nbkit.weights import hub
    from nbkit.weights.registry import MODELS, UPSCALER

    registered = model in MODELS and MODELS[model].kind == UPSCALER
    if check and not registered:
        hub.fetch_upscaler(model, cache, progress=False)      # a path (nothing is downloaded), or refused
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
        print(f"upscaled: {path}", file=sys.stderr)


def _source_path(image: str) -> Path:
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"No image at {path}: give a PNG that nbkit saved, or any image file "
                                "(then also --prompt).")
    return path


def _translated(args: argparse.Namespace, prompts: list[str], negative: str):
    """`--translate`: the English prompts and negative prompts to draw, and what was typed (per prompt)."""
    from nbkit.text.translate import translate_prompts

    english, negatives, translations = translate_prompts(list(prompts), negative, args.translate, args.cache)
    for typed, drawn, translation in zip(prompts, english, translations, strict=True):
        if translation is not None:
            print(f"translated with {translation['translator']}: {typed!r} → {drawn!r}", file=sys.stderr)
    return english, negatives, translations


def _edit_fields(args: argparse.Namespace) -> dict:
    """What every edit takes from the command line (see `nbkit.generation.from_image.Edit`); a typed
    prompt or negative prompt in another language is translated first (`--translate`)."""
    prompt, negative = args.prompt, args.negative
    if prompt is not None or negative:
        english, negatives, _ = _translated(args, [prompt or ""], negative or "")
        prompt = english[0] if prompt is not None else None
        negative = negatives[0] if negative else negative
    return {"seed": _seed(args), "prompt": prompt, "negative_prompt": negative, "settings": _settings(args)}


def _vary(args: argparse.Namespace) -> None:
    from nbkit.generation.from_image import Vary

    edit = Vary(keep_rows=args.keep_rows, n_images=args.n, **_edit_fields(args))     # checked before loading
    source = _source_path(args.image)
    pipe = _pipeline(args)
    what = f"varying {source.name} (first {args.keep_rows} of 16 rows kept):"
    print(_make(pipe, edit.request(pipe.source(source)), args, what).path)


def _extend(args: argparse.Namespace) -> None:
    from nbkit.generation.from_image import Extend
    from nbkit.output.runs import extend_to_folder
    from nbkit.places import output_root

    direction, rows = ("down", args.down) if args.down is not None else ("right", args.right)
    edit = Extend(direction=direction, rows=rows, **_edit_fields(args))
    source = _source_path(args.image)
    pipe = _pipeline(args)
    print(f"extending {source.name} {direction} by {rows} token rows/columns, {args.times} time(s)",
          file=sys.stderr)
    folder, pieces, stitched = extend_to_folder(pipe, source, edit, output_root(args.out), args.times)
    for piece in pieces:
        print(f"piece: {piece}", file=sys.stderr)
    print(stitched)


def _fill(args: argparse.Namespace) -> None:
    from nbkit.generation.from_image import Fill
    from nbkit.output.storage import RunFolder

    edit = Fill(region=tuple(args.region), n_images=args.n, **_edit_fields(args))
    source = _source_path(args.image)
    pipe = _pipeline(args)
    folder = _make(pipe, edit.request(pipe.source(source)), args, f"filling region {args.region} of "
                                                                  f"{source.name}:")
    ranked = sorted(RunFolder.open(folder.path).entries(), key=lambda e: -(e.get("kept_logprob") or 0))
    print("candidates, most likely first (log-probability of the kept tokens after the region):",
          file=sys.stderr)
    for entry in ranked:
        print(f"  {entry['kept_logprob']:10.2f}  {entry['file']}", file=sys.stderr)
    print(folder.path)


def _reproduce(args: argparse.Namespace) -> None:
    """Each PNG made again with the model it names (or --model): what was made, whether its tokens are
    the recorded ones and how many pixels differ. Fails (exit 1) when any is outside the README's
    contract: the same tokens, pixels within one level."""
    from nbkit.generation.pipeline import Pipeline
    from nbkit.output.runs import is_upscaled, reproduce_png
    from nbkit.output.storage import ImageRecord
    from nbkit.png import read_png_metadata

    pngs = [_source_path(png) for png in args.pngs]
    records = {png: None if is_upscaled(png) else ImageRecord.from_metadata(read_png_metadata(png))
               for png in pngs}
    pipes: dict[tuple[str, str | None], Pipeline] = {}
    failed = 0
    for png in pngs:
        record = records[png]
        if record is None:                 # upscaled: made again from its source beside it
            made = reproduce_png(None, png, args.cache)
            print(f"{'reproduced' if made.within_contract else 'DIFFERS'}: {png}  upscaled again from its "
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
        print(f"{verdict}: {png}  prompt {image.prompt_index + 1} {image.prompt!r}, image "
              f"{image.image_index + 1}, seed {image.seed} ({image.dtype}, row {image.batch_row + 1} of a "
              f"batch of {image.batch_size}); tokens "
              f"{'match' if made.tokens_match else f'differ in {made.tokens_differing}'} "
              f"of {len(made.recorded_tokens)}; {made.pixels_differing} pixel(s) differ by > 0 levels "
              f"(at most {made.most_levels})")
        failed += not made.within_contract
    if failed:
        raise ValueError(f"{failed} of {len(pngs)} image(s) were not reproduced within the contract (the "
                         "same tokens, pixels within one level): see above.")


def _rerank(args: argparse.Namespace) -> None:
    from nbkit.output.rerank import Reranker
    from nbkit.output.runs import rerank_folder
    from nbkit.weights import hub

    folder = Path(args.folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"No folder {folder}: give a run folder made by `nbkit generate`.")
    reranker = Reranker.from_folder(hub.fetch(args.clip, args.cache))
    for group in rerank_folder(folder, reranker):
        print(f"{group['prompt_index'] + 1}. {group['prompt']}   (best first: {group['grid']})")
        for entry in group["images"]:
            print(f"  {entry['score']:9.4f}  #{entry['image_index'] + 1}  {entry['file']}")


def _download(args: argparse.Namespace) -> None:
    from nbkit.weights import hub

    for name in args.names:
        print(f"{name}: {hub.fetch(name, args.cache)}")


def _info(args: argparse.Namespace) -> None:
    from nbkit import __version__
    from nbkit.generation.device import detect
    from nbkit.places import model_cache
    from nbkit.weights import hub
    from nbkit.weights.registry import translators_summary, upscalers_summary

    print(f"nbkit {__version__}")
    print(detect().summary())
    root = model_cache(args.cache)
    cached = hub.cached_models(root)
    print(f"cache:        {root} ({len(cached)} model folder(s))")
    for source, folder, size in cached:
        print(f"  {source}  {size / 1e9:.2f} GB  {folder}")
    print(upscalers_summary())
    print(translators_summary())


def _upscale(args: argparse.Namespace) -> None:
    from nbkit.output.upscaled import upscale_files

    upscaler = _upscaler(args.model, args.cache)   # loaded after every image has been read
    bar, progress = _tile_bar(f"upscaling with {args.model}")
    with bar:
        for path in upscale_files(upscaler, args.images, args.out, progress):
            print(path)


def _add_making_arguments(command: argparse.ArgumentParser, grid: bool = True) -> None:
    """The model, seed, sampling and output options every command that makes images shares."""
    add_model_arguments(command)
    command.add_argument("--seed", help="same seed, same image tokens: 0 to 4294967295 (default: random, "
                                        "printed)")
    command.add_argument("--temperature", type=float)
    command.add_argument("--top-k", type=int)
    command.add_argument("--top-p", type=float)
    command.add_argument("--condition-scale", type=float, default=10.0,
                         help="super-conditioning (default 10)")
    command.add_argument("--negative", default=None, metavar="TEXT",
                         help="what the images should not show (in place of the empty prompt in "
                              "super-conditioning)")
    command.add_argument("--translate", default="auto", metavar="auto|off|NAME",
                         help="prompts not in English: auto (default) picks an opus-mt translator from the "
                              "script, off draws them as typed, NAME a translator (translate-zh, a folder, a "
                              "hub id); English prompts load nothing")
    command.add_argument("--out", help="output folder (default: $NBKIT_OUTPUT, Drive, ./nbkit-outputs)")
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
    generate.add_argument("prompts", nargs="*", metavar="PROMPT")
    generate.add_argument("--prompts-file", metavar="FILE",
                          help="read the prompts from a UTF-8 text file, one per line (blank lines skipped)")
    generate.add_argument("-n", type=int, default=1, help="images per prompt (default 1)")
    generate.add_argument("--upscale", nargs="?", const="esrgan-x4", metavar="MODEL",
                          help="also upscale each image beside it, after the prompts (default esrgan-x4; "
                               "esrgan-anime, esrgan-x2, esrgan-fast, or a .pth / .safetensors file)")
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
    _add_making_arguments(vary)
    vary.set_defaults(run=_vary)

    extend = commands.add_parser("extend", help="continue an image down or to the right", epilog=EPILOG)
    extend.add_argument("image", metavar="IMAGE", help="a PNG nbkit saved, or any image (then --prompt)")
    way = extend.add_mutually_exclusive_group(required=True)
    way.add_argument("--down", type=int, metavar="R", help="add R rows of tokens (16 px each) below, 1–15")
    way.add_argument("--right", type=int, metavar="R", help="add R columns of tokens on the right, 1–15")
    extend.add_argument("--times", type=int, default=1, help="extend again from each new piece (a panorama)")
    extend.add_argument("--prompt", help="what to draw (default: the prompt the PNG was made with)")
    _add_making_arguments(extend, grid=False)
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
    _add_making_arguments(fill)
    fill.set_defaults(run=_fill)

    reproduce = commands.add_parser("reproduce", help="make saved PNGs again and check them against the "
                                                      "files (same tokens, pixels within one level)",
                                    epilog=EPILOG)
    reproduce.add_argument("pngs", nargs="+", metavar="PNG", help="images nbkit saved")
    add_model_arguments(reproduce, model=None)
    reproduce.set_defaults(run=_reproduce)

    rerank = commands.add_parser("rerank", help="score a run folder's images with CLIP, best first")
    rerank.add_argument("folder", metavar="DIR")
    rerank.add_argument("--clip", default="clip-b32",
                        help="CLIP model (default clip-b32; clip-l14 is better)")
    rerank.set_defaults(run=_rerank)

    download = commands.add_parser("download", help="fetch models into the cache (for offline use)")
    download.add_argument("names", nargs="+", metavar="NAME")
    download.set_defaults(run=_download)

    upscale = commands.add_parser("upscale", help="make pictures 4× (or 2×) larger with Real-ESRGAN, saved "
                                  "beside them")
    upscale.add_argument("images", nargs="+", metavar="IMAGE", help="PNG (or JPEG, WebP…) files")
    upscale.add_argument("--model", default="esrgan-x4",
                         help="esrgan-x4 (default), esrgan-anime, esrgan-x2, esrgan-fast, or a .pth / "
                              ".safetensors file")
    upscale.add_argument("--out", help="folder to save into (default: beside each image)")
    upscale.set_defaults(run=_upscale)

    info = commands.add_parser("info", help="devices, recommended dtype and model, cache contents")
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
