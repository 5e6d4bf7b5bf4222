"""Which image tokens to keep rather than draw: the one idea behind variations, extending a picture and
filling a region. DALL·E mini draws an image as a 16 × 16 grid of tokens in raster order; keeping some
of them and drawing the rest is all that "start from an image" means.

A `KeptTokens` holds the grid's tokens and a mask of the positions to keep. Its constructors say what
each edit keeps: the first rows (`first_rows`), a grid moved up or left to open a band to draw
(`shifted`), everything outside a rectangle (`outside`). Pure numpy: no device, no model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

Direction = Literal["down", "right"]
DIRECTIONS: tuple[Direction, ...] = ("down", "right")


def _grid_side(length: int) -> int:
    side = int(round(length ** 0.5))
    if side * side != length:
        raise ValueError(f"Image tokens form a square grid; {length} tokens do not.")
    return side


def is_whole_number(value) -> bool:
    """An int (numpy's too), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def tokens_sha256(tokens: np.ndarray) -> str:
    """A short name for a token grid (what a variation records of its source)."""
    return hashlib.sha256(np.asarray(tokens, "<i4").tobytes()).hexdigest()


@dataclasses.dataclass(frozen=True, eq=False)
class KeptTokens:
    """Tokens to keep (`tokens` where `mask`), for one image of `side × side` tokens, flattened in raster
    order. Kept tokens come out exactly as given, and the model conditions on them as if it had drawn
    them; it sees a kept token only once raster order reaches it."""

    tokens: np.ndarray   # (length,) int32
    mask: np.ndarray     # (length,) bool

    def __post_init__(self):
        tokens = np.asarray(self.tokens)
        mask = np.asarray(self.mask)
        if tokens.ndim != 1 or mask.shape != tokens.shape:
            raise ValueError(f"KeptTokens needs tokens and a mask of the same (length,) shape, got "
                             f"{tokens.shape} and {mask.shape}.")
        if not np.issubdtype(tokens.dtype, np.integer) or (tokens.size and tokens.min() < 0):
            raise ValueError("Kept tokens must be whole numbers ≥ 0 (image codes).")
        if mask.dtype != np.bool_:
            raise ValueError(f"The kept mask must be booleans, got {mask.dtype}.")
        _grid_side(len(tokens))
        tokens = np.where(mask, tokens, 0).astype(np.int32)   # what is not kept plays no part
        tokens.flags.writeable = False
        mask = mask.copy()
        mask.flags.writeable = False
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "mask", mask)

    @property
    def side(self) -> int:
        return _grid_side(len(self.tokens))

    @property
    def count(self) -> int:
        return int(self.mask.sum())

    def __eq__(self, other) -> bool:
        return (isinstance(other, KeptTokens) and np.array_equal(self.tokens, other.tokens)
                and np.array_equal(self.mask, other.mask))

    def __hash__(self) -> int:
        return hash((self.tokens.tobytes(), self.mask.tobytes()))

    # ---- what each edit keeps

    @classmethod
    def first_rows(cls, tokens: np.ndarray, rows: int) -> KeptTokens:
        """A variation: the first `rows` rows of the grid kept, the rest drawn anew (0: a new image from
        the prompt; all rows: the source itself)."""
        tokens = _flat(tokens)
        side = _grid_side(len(tokens))
        if not is_whole_number(rows) or not 0 <= rows <= side:
            raise ValueError(f"keep_rows must be a whole number from 0 to {side} (got {rows!r}).")
        mask = np.zeros((side, side), bool)
        mask[:rows] = True
        return cls(tokens, mask.reshape(-1))

    @classmethod
    def shifted(cls, tokens: np.ndarray, direction: Direction, amount: int) -> KeptTokens:
        """Extending a picture: the grid moved up (`down`) or left (`right`) by `amount` rows or columns;
        what is still inside is kept, the new band at the bottom or right is drawn. For `right`, every
        row keeps its left columns, which raster order reaches before the new ones."""
        tokens = _flat(tokens)
        side = _grid_side(len(tokens))
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)} (got {direction!r}).")
        if not is_whole_number(amount) or not 1 <= amount < side:
            raise ValueError(f"Extend by 1 to {side - 1} rows or columns (got {amount!r}).")
        grid = tokens.reshape(side, side)
        moved, mask = np.zeros_like(grid), np.zeros((side, side), bool)
        if direction == "down":
            moved[:side - amount], mask[:side - amount] = grid[amount:], True
        else:
            moved[:, :side - amount], mask[:, :side - amount] = grid[:, amount:], True
        return cls(moved.reshape(-1), mask.reshape(-1))

    @classmethod
    def outside(cls, tokens: np.ndarray, top: int, left: int, bottom: int, right: int) -> KeptTokens:
        """Filling a region: every token kept but those in rows top..bottom-1, columns left..right-1."""
        tokens = _flat(tokens)
        side = _grid_side(len(tokens))
        box = (top, left, bottom, right)
        if not (all(is_whole_number(v) for v in box)
                and 0 <= top < bottom <= side and 0 <= left < right <= side):
            raise ValueError(f"The region to fill is (top, left, bottom, right) in token cells with "
                             f"0 ≤ top < bottom ≤ {side} and 0 ≤ left < right ≤ {side} (got {box}).")
        mask = np.ones((side, side), bool)
        mask[top:bottom, left:right] = False
        return cls(tokens, mask.reshape(-1))

    # ---- as recorded in a PNG's metadata

    def mask_hex(self) -> str:
        """The mask as hex digits (4 positions each, raster order): 64 characters for 256 tokens."""
        bits = np.packbits(self.mask.astype(np.uint8))
        return bits.tobytes().hex()

    @classmethod
    def from_record(cls, tokens: np.ndarray, mask_hex: str) -> KeptTokens:
        """The kept tokens of a saved image: its own tokens where its recorded mask is set (a kept
        token comes out exactly as given, so the image's tokens hold them)."""
        tokens = _flat(tokens)
        try:
            bits = np.unpackbits(np.frombuffer(bytes.fromhex(mask_hex), np.uint8))
        except ValueError as error:
            raise ValueError(f"The recorded kept mask {mask_hex[:20]!r}… is not hex digits.") from error
        if len(bits) < len(tokens) or bits[len(tokens):].any():
            raise ValueError(f"The recorded kept mask has {len(bits)} bits for {len(tokens)} tokens.")
        return cls(tokens, bits[:len(tokens)].astype(bool))


def _flat(tokens) -> np.ndarray:
    array = np.asarray(tokens)
    if array.ndim == 2 and array.shape[0] == array.shape[1]:
        array = array.reshape(-1)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"Expected one image's tokens, (length,) or (side, side) whole numbers; got "
                         f"{array.dtype} {array.shape}.")
    return array


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
    grids = [_flat(tokens) for tokens in images]
    if not grids:
        raise ValueError("A seamless grid needs at least one image.")
    side = _grid_side(len(grids[0]))
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
    grid = _flat(first).reshape(_grid_side(len(_flat(first))), -1)
    side = grid.shape[0]
    bands = [grid]
    for piece in pieces:
        piece = _flat(piece).reshape(side, side)
        bands.append(piece[side - amount:] if direction == "down" else piece[:, side - amount:])
    return np.concatenate(bands, axis=0 if direction == "down" else 1)
