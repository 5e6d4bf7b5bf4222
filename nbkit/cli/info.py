"""`nbkit info`: devices, the recommended dtype and model, the output folder and the cache's contents."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> None:
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
