"""`nbkit download NAME…`: models fetched into the cache for offline use, each tried and reported."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> None:
    """Every name tried, each reported (its folder or why not); exit 1 when any failed."""
    from nbkit.weights import hub
    from nbkit.weights.registry import MODELS, UPSCALER

    failed = []
    for name in args.names:
        try:
            registered = MODELS.get(name)
            folder = (hub.fetch_upscaler(name, args.cache) if registered and registered.kind == UPSCALER
                      else hub.fetch(name, args.cache))
            print(f"{name}: {Path(folder).resolve()}")
        except hub.ModelUnavailableError as error:
            failed.append(name)
            print(f"{name}: FAILED: {error}")
    if failed:
        raise ValueError(f"{len(failed)} of {len(args.names)} model(s) could not be downloaded "
                         f"({', '.join(failed)}): see above.")
