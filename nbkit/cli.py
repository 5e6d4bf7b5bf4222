"""`python -m nbkit` (or `nbkit`): generate, rerank, download, info.

Exit codes: 0 success, 2 bad usage (argparse), 1 failure with one clear line (`--debug`
shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

EPILOG = ("Models: mini, mega, mega-fp16 (W&B), a local folder, a hub id org/name[@revision] "
          "or entity/project/name:version.")


def _generate(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from nbkit.generation.pipeline import Batch, Done, GenerationRequest, Pipeline, Progress
    from nbkit.generation.sampling import SamplingSettings
    from nbkit.output.runs import Opened, stream_to_folder
    from nbkit.places import output_root

    settings = SamplingSettings(args.temperature, args.top_k, args.top_p, args.condition_scale)
    # Checked before the models are loaded:
    request = GenerationRequest(args.prompts, args.n, args.seed, settings, negative_prompt=args.negative)
    pipe = Pipeline.from_pretrained(args.model, args.vqgan, dtype=args.dtype, cache=args.cache,
                                    compilation_cache=args.compilation_cache)
    out = output_root(args.out)
    devices = f"{pipe.mesh.devices.size} {pipe.mesh.devices.flat[0].platform} device(s)"
    bar, made, folder = None, 0, None
    for event in stream_to_folder(pipe, request, out, grid=args.grid, progress_every=16):
        if isinstance(event, Opened):
            folder = event.folder.path
            if event.already_complete:
                print(f"already complete: all {event.already_saved} image(s) of this run "
                      f"(seed {request.seed}) are in {folder}", file=sys.stderr)
                break
            resumed = f", {event.already_saved} already saved" if event.already_saved else ""
            print(f"generating {event.to_make} image(s){resumed} for {len(request.prompts)} prompt(s) with "
                  f"{args.model} on {devices}, seed {request.seed} → {folder}", file=sys.stderr)
            bar = tqdm(total=event.to_make * pipe.model.config.image_length, unit="token", file=sys.stderr,
                       disable=None, desc="compiling (first batch only)")
        elif isinstance(event, Progress):
            bar.set_description("compiling (first batch only)" if event.compiling else "drawing image tokens")
            bar.update(event.tokens_done - bar.n)
        elif isinstance(event, Batch):
            made += len(event.images)
            bar.update(event.images_done * pipe.model.config.image_length - bar.n)
        elif isinstance(event, Done):
            bar.close()
            timings = event.timings
            print(f"seed {request.seed}; {made} new image(s) in {timings['total']:.1f} s "
                  f"(tokens {timings['tokens']:.1f} s, pixels {timings['pixels']:.1f} s)", file=sys.stderr)
    print(folder)


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

    print(f"nbkit {__version__}")
    print(detect().summary())
    root = model_cache(args.cache)
    cached = hub.cached_models(root)
    print(f"cache:        {root} ({len(cached)} model folder(s))")
    for source, folder, size in cached:
        print(f"  {source}  {size / 1e9:.2f} GB  {folder}")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="nbkit", description="DALL·E mini / Mega text-to-image, in JAX.",
                                   epilog=EPILOG)
    main.add_argument("--debug", action="store_true", help="show tracebacks")
    main.add_argument("--cache",
                      help="model cache folder (default: $NBKIT_CACHE, Drive, ~/.cache/nbkit/models)")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="make images from prompts and save them", epilog=EPILOG)
    generate.add_argument("prompts", nargs="+", metavar="PROMPT")
    generate.add_argument("-n", type=int, default=1, help="images per prompt (default 1)")
    generate.add_argument("--model", default="mini", help="DALL·E model (default mini)")
    generate.add_argument("--vqgan", default="vqgan", help="image decoder (default vqgan)")
    generate.add_argument("--seed", type=int, help="same seed, same image tokens (default: random, printed)")
    generate.add_argument("--temperature", type=float)
    generate.add_argument("--top-k", type=int)
    generate.add_argument("--top-p", type=float)
    generate.add_argument("--condition-scale", type=float, default=10.0,
                          help="super-conditioning (default 10)")
    generate.add_argument("--negative", default="", metavar="TEXT",
                          help="what the images should not show (in place of the empty prompt in "
                               "super-conditioning)")
    generate.add_argument("--out", help="output folder (default: $NBKIT_OUTPUT, Drive, ./nbkit-outputs)")
    generate.add_argument("--grid", action="store_true", help="also save a captioned grid per prompt")
    generate.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                          help="compute dtype (default: the device's recommended one)")
    generate.add_argument("--compilation-cache", help="folder to keep compiled programs in between runs")
    generate.set_defaults(run=_generate)

    rerank = commands.add_parser("rerank", help="score a run folder's images with CLIP, best first")
    rerank.add_argument("folder", metavar="DIR")
    rerank.add_argument("--clip", default="clip-b32",
                        help="CLIP model (default clip-b32; clip-l14 is better)")
    rerank.set_defaults(run=_rerank)

    download = commands.add_parser("download", help="fetch models into the cache (for offline use)")
    download.add_argument("names", nargs="+", metavar="NAME")
    download.set_defaults(run=_download)

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
    args = parser().parse_args(argv)
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
