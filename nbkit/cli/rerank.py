"""`nbkit rerank DIR`: a run folder's images scored with CLIP, printed best first, and a best-first
grid per prompt saved."""

from __future__ import annotations

import argparse
from pathlib import Path

from nbkit.cli.common import check_models


def run(args: argparse.Namespace) -> None:
    from nbkit.output.pictures import rerank_folder
    from nbkit.output.rerank import Reranker
    from nbkit.weights.registry import CLIP

    folder = Path(args.folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"No folder {folder.resolve()}: give a run folder made by `nbkit generate`.")
    found = check_models([("--clip", args.clip, CLIP)], args.cache)
    reranker = Reranker.from_folder(found["--clip"])
    for group in rerank_folder(folder, reranker):
        print(f"prompt {group['prompt_index']:03d} {group['prompt']!r}   (best first: "
              f"{(folder / group['grid']).resolve()})")
        for entry in group["images"]:
            print(f"  {entry['score']:9.4f}  image {entry['image_index']:03d}  "
                  f"{(folder / entry['file']).resolve()}")
