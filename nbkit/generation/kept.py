"""Which image tokens to keep rather than draw: the one idea behind variations, extending a picture and
filling a region. DALL·E mini draws an image as a 16 × 16 grid of tokens in raster order; keeping some
of them and drawing the rest is all that "start from an image" means.

A `KeptTokens` holds the grid's tokens and a mask of the positions to keep. Its constructors say what
each edit keeps: the first rows (`first_rows`), a grid moved up or left to open a band to draw
(`shifted`), everything outside a rectangle (`outside`). Pure numpy: no device, no model. The grids
themselves (their side, a name, laid side by side or stitched) are `nbkit.generation.token_grids`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nbkit.checks import is_whole_number
from nbkit.generation.token_grids import DIRECTIONS, Direction, flat_tokens, grid_side


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
        grid_side(len(tokens))
        tokens = np.where(mask, tokens, 0).astype(np.int32)   # what is not kept plays no part
        tokens.flags.writeable = False
        mask = mask.copy()
        mask.flags.writeable = False
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "mask", mask)

    @property
    def side(self) -> int:
        return grid_side(len(self.tokens))

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
        tokens = flat_tokens(tokens)
        side = grid_side(len(tokens))
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
        tokens = flat_tokens(tokens)
        side = grid_side(len(tokens))
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
        tokens = flat_tokens(tokens)
        side = grid_side(len(tokens))
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
        tokens = flat_tokens(tokens)
        try:
            bits = np.unpackbits(np.frombuffer(bytes.fromhex(mask_hex), np.uint8))
        except ValueError as error:
            raise ValueError(f"The recorded kept mask {mask_hex[:20]!r}… is not hex digits.") from error
        if len(bits) < len(tokens) or bits[len(tokens):].any():
            raise ValueError(f"The recorded kept mask has {len(bits)} bits for {len(tokens)} tokens.")
        return cls(tokens, bits[:len(tokens)].astype(bool))
