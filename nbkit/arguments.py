"""The command-line options that `python -m nbkit` and `nbkit serve` share, declared once: the models to
load and how. argparse only; each command reads the values it gets."""

from __future__ import annotations

import argparse

DTYPES = ("float32", "bfloat16", "float16")


def add_model_arguments(command: argparse.ArgumentParser, model: str | None = "mini") -> None:
    """--model, --vqgan, --dtype and --compilation-cache, for every command that loads the models."""
    command.add_argument("--model", default=model,
                         help=f"DALL·E model (default {model})" if model else
                         "DALL·E model (default: the one each PNG names)")
    command.add_argument("--vqgan", default="vqgan", help="image decoder (default vqgan)")
    command.add_argument("--dtype", choices=DTYPES,
                         help="compute dtype (default: the device's recommended one)")
    command.add_argument("--compilation-cache", help="folder to keep compiled programs in between runs")
