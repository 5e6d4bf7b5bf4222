"""The command-line options that `python -m nbkit` and `nbkit serve` share, declared once: the models to
load and how. argparse only; each command reads the values it gets."""

from __future__ import annotations

import argparse

DTYPES = ("float32", "bfloat16", "float16")
# How DalleBart's kernels are kept in memory, all computing in float32 (nbkit.weights.stored); "auto" as
# an option picks one per host.
WEIGHT_STORAGES = ("float32", "bfloat16", "int8")
STORAGE_HELP = ("how DALL·E's weights are kept: float32 (default), bfloat16 (half the bytes) or int8 (a "
                "quarter, one scale per output channel), all computed in float32, so only with --dtype "
                "float32; auto picks the fastest on this host. Narrower is faster where reading weights "
                "bounds a step (a CPU, a GPU at small batches), but its tokens are not float32's "
                "(docs/speed.md)")


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


def add_storage_argument(command: argparse.ArgumentParser, default: str | None = "float32",
                         help_text: str = STORAGE_HELP) -> None:
    """--weight-storage, for every command that loads DALL·E to draw (`default` None: the one each PNG
    records, for `reproduce`)."""
    command.add_argument("--weight-storage", choices=(*WEIGHT_STORAGES, "auto"), default=default,
                         help=help_text)


def storage_problem(storage: str | None, dtype: str | None) -> str | None:
    """Why `storage` cannot go with the compute `dtype` (None: it can, or either is not chosen): the
    narrower storages keep float32 arithmetic, and under another dtype the weights are already in it."""
    if storage in (None, "float32", "auto") or dtype in (None, "float32"):
        return None
    return f"{storage} weights compute in float32, not {dtype} (whose weights are {dtype} already)"
