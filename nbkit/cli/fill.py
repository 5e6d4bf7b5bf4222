"""`nbkit fill IMAGE --region TOP LEFT BOTTOM RIGHT`: a region drawn anew; prints the candidates, most
likely first (stderr), and the run folder."""

from __future__ import annotations

import argparse

from nbkit.cli.common import edit_start, say, spec_fields
from nbkit.cli.display import make


def run(args: argparse.Namespace) -> None:
    from nbkit.generation.from_image import Fill
    from nbkit.output.storage import RunFolder

    spec = Fill(region=tuple(args.region), prompt=args.prompt, negative_prompt=args.negative,
                **spec_fields(args))                                   # checked before any model loads
    source, pipe, spec = edit_start(args, spec)
    folder = make(pipe, spec, args, f"filling region {args.region} of {source.name}:", source).folder
    ranked = sorted(RunFolder.open(folder.path).entries(), key=lambda e: -(e.get("kept_logprob") or 0))
    say("candidates, most likely first (log-probability of the kept tokens after the region):")
    for entry in ranked:
        say(f"  {entry['kept_logprob']:10.2f}  {folder.path.resolve() / entry['file']}")
    print(folder.path.resolve())
