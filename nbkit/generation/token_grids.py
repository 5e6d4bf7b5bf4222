"""One image's tokens as a square grid (16 × 16 for the published models, raster order) and the grids
built from several: laid side by side as one seamless picture (`seamless_tokens`), or a picture and its
extensions stitched into one tall or wide grid (`stitched_tokens`); `tokens_sha256` names a grid in
records. Pure numpy: no device, no model.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from nbkit.checks import is_whole_number

Direction = Literal["down", "right"]
DIRECTIONS: tuple[Direction, ...] = ("down", "right")   # the ways a grid grows when a picture is extended


def grid_side(length: int) -> int:
    """The side of a square grid of `length` tokens (256 → 16); any other length is an error."""
    side = int(round(length ** 0.5))
    if side * side != length:
        raise ValueError(f"Image tokens form a square grid; {length} tokens do not.")
    return side


def flat_tokens(tokens) -> np.ndarray:
    """One image's tokens in raster order, from (length,) or (side, side) whole numbers."""
    array = np.asarray(tokens)
    if array.ndim == 2 and array.shape[0] == array.shape[1]:
        array = array.reshape(-1)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"Expected one image's tokens, (length,) or (side, side) whole numbers; got "
                         f"{array.dtype} {array.shape}.")
    return array


def tokens_sha256(tokens: np.ndarray) -> str:
    """A short name for a token grid (what a variation records of its source)."""
    return hashlib.sha256(np.asarray(tokens, "<i4").tobytes()).hexdigest()


def seamless_columns(count: int) -> int:
    """The most square full grid for `count` images: the fewest columns that are at least as many as the
    rows and divide `count` (4 → 2×2, 8 → 4 columns × 2 rows, 3, 5 or 7 → one row). Full, because the
    decoder has no token for "nothing"."""
    if not is_whole_number(count) or count < 1:
        raise ValueError(f"A seamless grid needs at least one image (got {count!r}).")
    return next(c for c in range(math.isqrt(count), count + 1) if count % c == 0 and c * c >= count)


def seamless_tokens(images: Sequence[np.ndarray], columns: int | None = None) -> np.ndarray:
    """Images' token grids laid side by side, `columns` to a row (default: `seamless_columns`, the most
    square full grid), as one (rows·side, columns·side) grid to decode as one picture. A grid that is
    not full is an error: the decoder has no token for "nothing"."""
    grids = [flat_tokens(tokens) for tokens in images]
    if not grids:
        raise ValueError("A seamless grid needs at least one image.")
    side = grid_side(len(grids[0]))
    if any(len(grid) != side * side for grid in grids):
        raise ValueError("A seamless grid's images must all have the same number of tokens.")
    columns = columns or seamless_columns(len(grids))
    if not is_whole_number(columns) or columns < 1 or len(grids) % columns:
        raise ValueError(f"{len(grids)} image(s) do not fill rows of {columns}: give a number of images that "
                         f"is a multiple of columns (e.g. 4 or 9 for a square).")
    cells = [grid.reshape(side, side) for grid in grids]
    rows = [np.concatenate(cells[r:r + columns], axis=1) for r in range(0, len(cells), columns)]
    return np.concatenate(rows, axis=0)


def stitched_tokens(first: np.ndarray, pieces: Sequence[np.ndarray], direction: Direction,
                    amount: int) -> np.ndarray:
    """One tall or wide grid from a picture and its extensions (each `pieces[i]` extends the one before it
    by `amount` rows or columns): the first grid, then each piece's new band."""
    grid = flat_tokens(first).reshape(grid_side(len(flat_tokens(first))), -1)
    side = grid.shape[0]
    bands = [grid]
    for piece in pieces:
        piece = flat_tokens(piece).reshape(side, side)
        bands.append(piece[side - amount:] if direction == "down" else piece[:, side - amount:])
    return np.concatenate(bands, axis=0 if direction == "down" else 1)
