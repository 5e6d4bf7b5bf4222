"""`nbkit reproduce PNG…`: saved PNGs made again (drawn ones with the model, dtype and weight storage they
name, upscaled ones from the source beside them) and checked against the files."""

from __future__ import annotations

import argparse

from nbkit.cli.common import check_models, load_pipeline, source_path


def run(args: argparse.Namespace) -> None:
    """Each PNG made again with the model it names (or --model): what was made, whether its tokens are
    the recorded ones and how many pixels differ. Fails (exit 1) when any is outside the README's
    contract: the same tokens, pixels within one level. Indexes are printed as the file names count
    them, from 000."""
    from nbkit.generation.pipeline import Pipeline
    from nbkit.output.records import ImageRecord
    from nbkit.output.reproduction import is_upscaled, reproduce
    from nbkit.png import read_png_metadata
    from nbkit.weights.registry import DALLEBART, VQGAN

    pngs = [source_path(png) for png in args.pngs]
    records = {png: None if is_upscaled(png) else ImageRecord.from_metadata(read_png_metadata(png))
               for png in pngs}
    wanted = sorted({args.model or record.model for record in records.values() if record is not None})
    check_models([("--model", model, DALLEBART) for model in wanted]
                 + ([("--vqgan", args.vqgan, VQGAN)] if wanted else []), args.cache)
    pipes: dict[tuple[str, str | None, str], Pipeline] = {}
    failed = 0
    for png in pngs:
        record = records[png]
        shown = png.resolve()
        if record is None:                 # upscaled: made again from its source beside it
            made = reproduce(None, png, args.cache)
            print(f"{'reproduced' if made.matches else 'DIFFERS'}: {shown}  upscaled again from its "
                  f"source; pixels differ by at most {made.most_levels} level(s)")
            failed += not made.matches
            continue
        # the model, dtype and weight storage it was made with (in half precision another dtype draws
        # other tokens, and so do weights kept narrower); a PNG that records no storage: float32
        model, dtype = args.model or record.model, args.dtype or record.dtype
        storage = args.weight_storage or record.storage
        if (model, dtype, storage) not in pipes:
            pipes[model, dtype, storage] = load_pipeline(args, model, dtype, storage)
        made = reproduce(pipes[model, dtype, storage], png)
        image = made.image
        verdict = "reproduced" if made.matches else "DIFFERS"
        kept = f", weights kept as {made.storage_here}" if made.storage_here != "float32" else ""
        count = len(made.recorded_tokens)
        tokens = (f"all {count} tokens match" if made.tokens_match
                  else f"{made.tokens_differing} of {count} tokens differ")
        print(f"{verdict}: {shown}  prompt {image.prompt_index:03d} {image.prompt!r}, image "
              f"{image.image_index:03d}, seed {image.seed} ({image.dtype}{kept}, row {image.batch_row:03d} "
              f"of a batch of {image.batch_size}); {tokens}; {made.pixels_differing} pixel(s) differ by > 0 "
              f"levels (at most {made.most_levels})")
        failed += not made.matches
    if failed:
        raise ValueError(f"{failed} of {len(pngs)} image(s) were not reproduced within the contract (the "
                         "same tokens, pixels within one level): see above.")
