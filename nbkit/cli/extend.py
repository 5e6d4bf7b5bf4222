"""`nbkit extend IMAGE --down R | --right R [--times N]`: an image continued, each piece from the one
before; prints each piece (stderr) and the stitched picture."""

from __future__ import annotations

import argparse

from nbkit.cli.common import edit_start, say, spec_fields
from nbkit.cli.display import make


def run(args: argparse.Namespace) -> None:
    from nbkit.generation.from_image import Extend

    direction, rows = ("down", args.down) if args.down is not None else ("right", args.right)
    fields = {**spec_fields(args), "n_images": 1}
    spec = Extend(direction=direction, rows=rows, times=args.times, prompt=args.prompt,
                  negative_prompt=args.negative, **fields)            # checked before any model loads
    source, pipe, spec = edit_start(args, spec)
    say(f"extending {source.name} {direction} by {rows} token rows/columns, {args.times} time(s)")
    made = make(pipe, spec, args, "extending:", source)
    for piece in made.pieces:
        say(f"piece: {piece.resolve()}")
    print(made.picture.resolve())
