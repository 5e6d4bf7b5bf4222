"""What the benchmarks share: the compute dtype choice."""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def add_dtype_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES),
                        help="compute dtype (default: float32 on CPU, bfloat16 on accelerators)")


def compute_dtype(args: argparse.Namespace):
    """The dtype asked for, or float32 on CPU and bfloat16 elsewhere."""
    return DTYPES[args.dtype or ("float32" if jax.default_backend() == "cpu" else "bfloat16")]
