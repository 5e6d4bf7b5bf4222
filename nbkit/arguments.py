"""The command-line options that `python -m nbkit` and `nbkit serve` share, declared once: the models to
load and how. argparse only; each command reads the values it gets."""

from __future__ import annotations

import argparse

DTYPES = ("float32", "bfloat16", "float16")


def add_model_arguments(command: argparse.ArgumentParser, model: str | None = "mini",
                        model_help: str | None = None) -> None:
    """--model, --vqgan, --dtype and --compilation-cache, for every command that loads the models."""
    command.add_argument("--model", default=model, metavar="NAME",
                         help=model_help or (f"DALL·E model (default {model})" if model else
                                             "DALL·E model (default: the one each PNG names)"))
    command.add_argument("--vqgan", default="vqgan", metavar="NAME",
                         help="image decoder: a name, folder or hub id (default vqgan)")
    command.add_argument("--dtype", choices=DTYPES,
                         help="compute dtype (default: the device's recommended one)")
    command.add_argument("--compilation-cache", metavar="DIR",
                         help="folder to keep compiled programs in between runs")
