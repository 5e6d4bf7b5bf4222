"""What both peer runners share: options, the timing loop, the token check, the JSON line.

Standard library and numpy only, since each runner runs in its own virtual environment.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

import numpy as np

IMAGES = 4  # one prompt, four images
IMAGE_TOKENS = 256
CODEBOOK_SIZE = 16384  # VQGAN codes 0..16383
CONDITION_SCALE = 10.0
TOP_K = 50
TEXT_LENGTH = 64
PROMPT_TOKENS = 10  # a realistic prompt: BOS, 8 word pieces, EOS; then padding
BOS, PAD, EOS = 0, 1, 2  # the BART text tokenizer's ids


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def forbid_network() -> None:
    """Make any connection attempt in this process fail loudly: nothing may be downloaded."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("network access attempted; the peer benchmarks must run offline")
    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.create_connection = refuse  # type: ignore[assignment]


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after the first one (default 2)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def prompt_tokens() -> list[int]:
    """A fixed stand-in for a tokenized prompt (no tokenizer files can be downloaded here)."""
    return [BOS, *range(100, 100 + PROMPT_TOKENS - 2), EOS]


def text_rows(tokens: list[int], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), each (rows, 64): the tokens, then padding."""
    ids = np.full((rows, TEXT_LENGTH), PAD, np.int32)
    ids[:, : len(tokens)] = tokens
    return ids, (ids != PAD).astype(np.int32)


def versions(*packages: str) -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    return found


def check_tokens(tokens: np.ndarray, upper: int = CODEBOOK_SIZE) -> np.ndarray:
    """Fail loudly unless tokens are (4, 256) integers in [0, upper)."""
    tokens = np.asarray(tokens)
    if tokens.shape != (IMAGES, IMAGE_TOKENS) or not np.issubdtype(tokens.dtype, np.integer):
        sys.exit(f"error: expected ({IMAGES}, {IMAGE_TOKENS}) integer image tokens, "
                 f"got {tokens.shape} {tokens.dtype}")
    if tokens.min() < 0 or tokens.max() >= upper:
        sys.exit(f"error: image tokens outside [0, {upper}): min {tokens.min()}, max {tokens.max()}")
    return tokens


def time_runs(run: Callable[[int], np.ndarray], repeats: int,
              check: Callable[[np.ndarray], np.ndarray] = check_tokens) -> tuple[float, list[float]]:
    """Time run(seed) once (first call: warm-up / compile) and then `repeats` times.

    run must return host (numpy) tokens, so that the work has finished when it returns.
    """
    start = time.perf_counter()
    check(run(0))
    first_s = time.perf_counter() - start
    log(f"first call: {first_s:.1f} s")
    runs_s = []
    for seed in range(1, repeats + 1):
        start = time.perf_counter()
        check(run(seed))
        runs_s.append(time.perf_counter() - start)
        log(f"run {seed}: {runs_s[-1]:.1f} s")
    return first_s, runs_s


def report(impl: str, first_s: float, runs_s: list[float], found_versions: dict[str, str],
           **extra: object) -> None:
    """The one line on stdout."""
    print(json.dumps({"impl": impl, "first_s": round(first_s, 3), "runs_s": [round(s, 3) for s in runs_s],
                      "best_s": round(min(runs_s), 3), "images": IMAGES, "image_tokens": IMAGE_TOKENS,
                      "versions": found_versions, **extra}), flush=True)
