"""`nbkit upscale IMAGE…`: pictures made 4× (or 2×) larger with Real-ESRGAN, saved beside them."""

from __future__ import annotations

import argparse

from nbkit.cli.common import check_models, tile_bar
from nbkit.cli.common import upscaler as load_upscaler


def run(args: argparse.Namespace) -> None:
    from nbkit.output.upscaled import upscale_files
    from nbkit.weights.registry import UPSCALER

    check_models([("--model", args.model, UPSCALER)], args.cache)
    upscaler = load_upscaler(args.model, args.cache)   # loaded after every image has been read
    bar, progress = tile_bar(f"upscaling with {args.model}")
    with bar:
        for path in upscale_files(upscaler, args.images, args.out, progress):
            print(path.resolve())
