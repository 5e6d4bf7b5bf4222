"""`nbkit generate PROMPT…`: prompts → a run folder (and, asked for, seamless pictures and upscaled
copies beside the images); prints the folder."""

from __future__ import annotations

import argparse

from nbkit.cli.common import (
    check_models,
    load_pipeline,
    pipeline_models,
    read_prompts_file,
    say,
    spec_fields,
    tile_bar,
    translated,
    translators_wanted,
    upscaler,
)
from nbkit.cli.display import make


def run(args: argparse.Namespace) -> None:
    from nbkit.generation.specs import Generate
    from nbkit.output.pictures import save_seamless
    from nbkit.weights.registry import UPSCALER

    # Checked before the models are loaded (and in `main`, a usage error: neither or both sources):
    prompts = read_prompts_file(args.prompts_file) if args.prompts_file is not None else args.prompts
    chosen = args.upscaler or ("esrgan-x4" if args.upscale else None)
    spec = Generate(prompts=prompts, negative_prompt=args.negative or "", **spec_fields(args))
    check_models(pipeline_models(args, args.model) + translators_wanted(args, spec.texts)
                 + ([("--upscaler", chosen, UPSCALER)] if chosen else []), args.cache)
    spec = translated(args, spec)
    pipe = load_pipeline(args)
    folder = make(pipe, spec, args, "generating").folder
    if args.seamless:
        for prompt_index in range(len(spec.prompts)):
            say(f"seamless: {save_seamless(pipe, folder, prompt_index).resolve()}")
    if chosen is not None:
        upscale_run(folder, upscaler(chosen, args.cache))
    print(folder.path.resolve())


def upscale_run(folder, model) -> None:
    """Each image of the run upscaled beside it and listed with the run (`pictures.upscale_saved`)."""
    from nbkit.output.pictures import upscale_saved

    bar, progress = tile_bar(f"upscaling with {model.model_name}")
    with bar:
        saved = upscale_saved(folder, model, progress=progress)
    for path in saved:
        say(f"upscaled: {path.resolve()}")
