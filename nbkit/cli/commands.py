"""The command line's parser (every command, its options and help) and `main`, which runs the chosen
command's module (`nbkit.cli.<command>`, imported only then: making the parser imports no jax)."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from nbkit.arguments import add_model_arguments, add_storage_argument, storage_problem

EPILOG = ("Models: mini, mega, mega-fp16 (W&B), a local folder, a hub id org/name[@revision] "
          "or entity/project/name:version.")
EDIT_MODEL_HELP = "DALL·E model (default: the one the PNG names, else mini)"
REPRODUCE_STORAGE_HELP = ("how to keep DALL·E's weights: float32, bfloat16, int8 or auto (default: the "
                          "storage each PNG records; float32 for PNGs that record none)")
OUT_HELP = ("output folder (default: $NBKIT_OUTPUT, else Drive's MyDrive/nbkit/outputs on Colab, else "
            "~/nbkit/outputs)")


def _model_names() -> list[str]:
    """The registered names, read when a parser is made (the registry is not imported at start)."""
    from nbkit.weights.registry import MODELS

    return list(MODELS)


def _add_making_arguments(command: argparse.ArgumentParser, grid: bool = True, model: str | None = "mini",
                          model_help: str | None = None) -> None:
    """The model, seed, sampling and output options every command that makes images shares."""
    add_model_arguments(command, model=model, model_help=model_help)
    add_storage_argument(command)
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
    generate.set_defaults(run="generate")

    vary = commands.add_parser("vary", help="variations of an image: keep its first rows, draw the rest",
                               epilog=EPILOG)
    vary.add_argument("image", metavar="IMAGE", help="a PNG nbkit saved, or any image (then --prompt)")
    vary.add_argument("-n", type=int, default=4, help="how many variations (default 4)")
    vary.add_argument("--keep-rows", type=int, default=8,
                      help="rows of 16 kept from the top (default 8; 0 = new images, 16 = the image itself)")
    vary.add_argument("--prompt", help="what to draw (default: the prompt the PNG was made with)")
    _add_making_arguments(vary, model=None, model_help=EDIT_MODEL_HELP)
    vary.set_defaults(run="vary")

    extend = commands.add_parser("extend", help="continue an image down or to the right", epilog=EPILOG)
    extend.add_argument("image", metavar="IMAGE", help="a PNG nbkit saved, or any image (then --prompt)")
    way = extend.add_mutually_exclusive_group(required=True)
    way.add_argument("--down", type=int, metavar="R", help="add R rows of tokens (16 px each) below, 1–15")
    way.add_argument("--right", type=int, metavar="R", help="add R columns of tokens on the right, 1–15")
    extend.add_argument("--times", type=int, default=1, help="extend again from each new piece (a panorama)")
    extend.add_argument("--prompt", help="what to draw (default: the prompt the PNG was made with)")
    _add_making_arguments(extend, grid=False, model=None, model_help=EDIT_MODEL_HELP)
    extend.set_defaults(run="extend")

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
    fill.set_defaults(run="fill")

    reproduce = commands.add_parser("reproduce", help="make saved PNGs again and check them against the "
                                                      "files (same tokens, pixels within one level)",
                                    epilog=EPILOG)
    reproduce.add_argument("pngs", nargs="+", metavar="PNG", help="images nbkit saved")
    add_model_arguments(reproduce, model=None)
    add_storage_argument(reproduce, default=None, help_text=REPRODUCE_STORAGE_HELP)
    reproduce.set_defaults(run="reproduce")

    rerank = commands.add_parser("rerank", help="score a run folder's images with CLIP, best first")
    rerank.add_argument("folder", metavar="DIR", help="a run folder (the path `generate` printed)")
    rerank.add_argument("--clip", default="clip-b32",
                        help="CLIP model (default clip-b32; clip-l14 is better)")
    rerank.set_defaults(run="rerank")

    download = commands.add_parser("download", help="fetch models into the cache (for offline use)",
                                   epilog="Models: " + ", ".join(_model_names()) + ".")
    download.add_argument("names", nargs="+", metavar="NAME",
                          help="models to fetch, each tried and reported: " + ", ".join(_model_names())
                               + ", or a hub id org/name[@revision]")
    download.set_defaults(run="download")

    upscale = commands.add_parser("upscale", help="make pictures 4× (or 2×) larger with Real-ESRGAN, saved "
                                  "beside them")
    upscale.add_argument("images", nargs="+", metavar="IMAGE", help="PNG (or JPEG, WebP…) files")
    upscale.add_argument("--model", default="esrgan-x4",
                         help="esrgan-x4 (default), esrgan-anime, esrgan-x2, esrgan-fast, or a .pth / "
                              ".safetensors file")
    upscale.add_argument("--out", metavar="DIR", help="folder to save into (default: beside each image)")
    upscale.set_defaults(run="upscale")

    info = commands.add_parser("info", help="devices, recommended dtype and model, output folder and cache "
                                            "contents (loads no model)")
    info.set_defaults(run="info")

    serve = commands.add_parser("serve", help="a web page and an HTTP API, shared by many people",
                                epilog=EPILOG)
    _add_serve_arguments(serve)
    serve.set_defaults(run="serve")
    return main


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    from nbkit.server.command import add_arguments

    add_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    command_line = parser()
    args = command_line.parse_args(argv)
    if args.command == "generate" and (args.prompts_file is None) == (not args.prompts):
        command_line.error("generate: give PROMPT arguments or --prompts-file FILE (one of them)")
    problem = storage_problem(getattr(args, "weight_storage", None), getattr(args, "dtype", None))
    if problem:
        command_line.error(f"{args.command}: --weight-storage {args.weight_storage}: {problem}: add --dtype "
                           "float32, or leave --weight-storage out")
    try:
        importlib.import_module(f"nbkit.cli.{args.run}").run(args)
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
