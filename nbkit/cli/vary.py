"""`nbkit vary IMAGE`: variations of an image (its first rows kept); prints the run folder."""

from __future__ import annotations

import argparse

from nbkit.cli.common import edit_start, spec_fields
from nbkit.cli.display import make


def run(args: argparse.Namespace) -> None:
    from nbkit.generation.from_image import Vary

    spec = Vary(keep_rows=args.keep_rows, prompt=args.prompt, negative_prompt=args.negative,
                **spec_fields(args))                                   # checked before any model loads
    source, pipe, spec = edit_start(args, spec)
    what = f"varying {source.name} (first {args.keep_rows} of 16 rows kept):"
    print(make(pipe, spec, args, what, source).folder.path.resolve())
