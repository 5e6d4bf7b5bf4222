"""Starting from an image: variations, extending a picture, filling a region — as requests.

A source is an image's 256 tokens and the prompt to draw with. A PNG that nbkit saved gives both
exactly (from its metadata); any other image is encoded with the VQGAN encoder, and the prompt must
then be given. Each edit is a small frozen dataclass (`Vary`, `Extend`, `Fill`), checked once when made, whose
`request(source)` is a `GenerationRequest` with `kept` tokens saying what stays and `source` saying
where it came from (recorded with every image, so `reproduce` can make it again). They are specs
(`nbkit.generation.specs`, beside `Generate`): every front end (CLI, notebook form, server) and the
`Pipeline` methods `vary`, `extend` and `fill` build these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nbkit.checks import is_whole_number
from nbkit.generation.kept import KeptTokens
from nbkit.generation.request import GenerationRequest, clean_translation
from nbkit.generation.specs import Spec
from nbkit.generation.token_grids import DIRECTIONS, Direction, tokens_sha256
from nbkit.png import read_png_metadata

GRID_SIDE = 16      # image tokens per row and column of the published models (their 256-token images)


@dataclasses.dataclass(frozen=True, eq=False)
class SourceImage:
    """An image to start from: its tokens, and the prompt (and negative prompt) it was made with,
    when known."""

    tokens: np.ndarray               # (256,) int32
    prompt: str | None = None
    negative_prompt: str = ""
    name: str = "image"              # the file's name, for the record
    encoded: bool = False            # tokens from the VQGAN encoder, not from the image's metadata
    translation: dict | None = None  # what was typed, when its prompt was translated (kept by edits)

    @property
    def tokens_sha256(self) -> str:
        return tokens_sha256(self.tokens)

    def describe(self) -> dict[str, Any]:
        return {"file": self.name, "tokens_sha256": self.tokens_sha256, "encoded": self.encoded}


def open_source(image: Any, encode: Callable[[Any], np.ndarray]) -> SourceImage:
    """`image`: a SourceImage, a GeneratedImage (has `.tokens` and `.prompt`), a path to a PNG nbkit
    saved (tokens and prompt from its metadata), or any other image — path, PIL image or array —
    which `encode` turns into tokens."""
    if isinstance(image, SourceImage):
        return image
    if hasattr(image, "tokens") and hasattr(image, "prompt"):
        name = f"{getattr(image, 'prompt_index', 0):03d}_s{getattr(image, 'seed', 0)}_" \
               f"{getattr(image, 'image_index', 0):03d}"
        return SourceImage(np.asarray(image.tokens, np.int32), image.prompt,
                           getattr(image, "negative_prompt", ""), name)
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"No image at {path}: give the path of a PNG nbkit saved, or of any "
                                    "image file.")
        try:
            metadata = read_png_metadata(path)
        except ValueError:
            metadata = {}
        tokens = metadata.get("tokens")
        if tokens:
            return SourceImage(np.asarray(tokens, np.int32), metadata.get("prompt"),
                               metadata.get("negative_prompt") or "", path.name,
                               translation=clean_translation(metadata.get("translation")))
        return SourceImage(np.asarray(encode(path), np.int32), None, "", path.name, encoded=True)
    return SourceImage(np.asarray(encode(image), np.int32), None, "", "image", encoded=True)


def _prompt(source: SourceImage, prompt: str | None) -> str:
    chosen = prompt if prompt is not None else source.prompt
    if chosen is None:
        raise ValueError(f"{source.name} was not made by nbkit (or its metadata was stripped), so its prompt "
                         "is unknown: give one (prompt=…, --prompt TEXT) saying what the image shows.")
    return chosen


_NEGATIVE_KEYS = ("typed_negative_prompt", "translator_negative_english")


def _whole_in(value: Any, low: int, high: int, message: str) -> int:
    if not is_whole_number(value) or not low <= value <= high:
        raise ValueError(f"{message} (got {value!r}).")
    return int(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Edit(Spec):
    """What every edit of an image shares, besides a spec's count, seed and settings: the prompt and
    negative prompt (None: the source's). A subclass says what is kept (`kept`) and how it is recorded
    (`describe`); `request(source)` builds the `GenerationRequest`. Checked once, when made: the CLI, the
    notebook form, the server and the `Pipeline` methods build these and nothing else."""

    needs_source: ClassVar[bool] = True

    prompt: str | None = None
    negative_prompt: str | None = None
    translation: dict | None = None     # what was typed, when `prompt` or `negative_prompt` was translated

    def __post_init__(self):
        super().__post_init__()
        if self.translation is not None and clean_translation(
                {"typed_prompt": "", **self.translation}) is None:
            raise ValueError(f"translation must be a record of what was typed (got {self.translation!r}).")
        for name in ("prompt", "negative_prompt"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be text or None (got {getattr(self, name)!r}).")

    @property
    def texts(self) -> list[str]:
        return [self.prompt or "", self.negative_prompt or ""]

    def translated(self, choice: str, cache: Any = None, loader: Callable | None = None) -> Edit:
        """The prompt and negative prompt given here in English (the source's own prompt is English
        already), `translation` saying what was typed."""
        from nbkit.text.translate import translate_prompts

        if choice == "off" or (self.prompt is None and not self.negative_prompt):
            return self
        english, negatives, records = translate_prompts([self.prompt or ""], self.negative_prompt or "",
                                                        choice, cache, loader)
        record = records[0]
        if record is not None and self.prompt is None:       # the source's prompt: only the negative's
            record = {k: v for k, v in record.items() if k != "typed_prompt"}
        return dataclasses.replace(
            self, prompt=english[0] if self.prompt is not None else None,
            negative_prompt=negatives[0] if self.negative_prompt else self.negative_prompt,
            translation=record)

    def kept(self, tokens: np.ndarray) -> KeptTokens:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def request(self, source: SourceImage | None = None) -> GenerationRequest:
        """The request that makes this edit of `source`."""
        if not isinstance(source, SourceImage):
            raise ValueError(f"An edit starts from an image: give its SourceImage (got {source!r}; "
                             "`open_source` or `Pipeline.source` makes one).")
        negative = source.negative_prompt if self.negative_prompt is None else self.negative_prompt
        prompt = _prompt(source, self.prompt)
        return GenerationRequest([prompt], self.n_images, self.seed, self.settings,
                                 negative_prompt=negative, kept=self.kept(source.tokens),
                                 source={**source.describe(), **self.describe()},
                                 translations=[self._translation(source, prompt)])

    def _translation(self, source: SourceImage, prompt: str) -> dict | None:
        """What was typed, for the record: the source's prompt keeps its typed form (an edit of a
        translated image), a prompt or negative prompt given here its own (`translation`)."""
        own, carried = dict(self.translation or {}), dict(source.translation or {})
        for_prompt = own if self.prompt is not None else carried
        for_negative = own if self.negative_prompt is not None else carried
        record = {k: v for k, v in for_prompt.items() if k not in _NEGATIVE_KEYS}
        negative = {k: for_negative[k] for k in _NEGATIVE_KEYS if k in for_negative}
        if not record.get("typed_prompt") and not negative:
            return None
        if not record.get("typed_prompt"):
            record = {"typed_prompt": prompt, "translator": for_negative.get("translator", ""),
                      "translator_revision": for_negative.get("translator_revision", "")}
        return {**record, **negative}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Vary(Edit):
    """Variations: the first `keep_rows` rows of the source's 16 kept, the rest drawn anew (0: new
    images from the prompt; 16: the source's tokens)."""

    keep_rows: int = 8
    n_images: int = 4

    def __post_init__(self):
        super().__post_init__()
        _whole_in(self.keep_rows, 0, GRID_SIDE, f"keep_rows must be a whole number from 0 to {GRID_SIDE}")

    def kept(self, tokens: np.ndarray) -> KeptTokens:
        return KeptTokens.first_rows(tokens, self.keep_rows)

    def describe(self) -> dict[str, Any]:
        return {"edit": "vary", "keep_rows": self.keep_rows}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Extend(Edit):
    """The source moved up (`down`) or left (`right`) by `rows` rows or columns (1–15); the new band
    drawn."""

    direction: Direction = "down"
    rows: int = 8
    times: int | None = None     # a chain: `times` pieces, each extending the one before (then stitched)

    def __post_init__(self):
        super().__post_init__()
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)} (got {self.direction!r}).")
        _whole_in(self.rows, 1, GRID_SIDE - 1, f"Extend by 1 to {GRID_SIDE - 1} rows or columns")
        if self.times is not None:
            times = _whole_in(self.times, 1, 2**10, "times must be a whole number ≥ 1")
            object.__setattr__(self, "times", times)
            if self.n_images != 1:
                raise ValueError("An extension chain makes one piece at a time: leave n_images at 1, "
                                 "use times.")

    def request(self, source: SourceImage | None = None) -> GenerationRequest:
        """The request of this edit; of a chain, the whole chain's (image i is piece i: its seed is
        drawn once, and its run folder holds every piece)."""
        if self.times is not None:
            return dataclasses.replace(self, n_images=self.times, times=None).request(source)
        return super().request(source)

    def piece(self, chain: GenerationRequest, previous: SourceImage, index: int) -> GenerationRequest:
        """Piece `index` of a chain (`chain`: its `request`): image `index` of the chain's request (its
        key from (seed, 0, index)), extending `previous`, with the chain's prompt and what was typed."""
        edit = dataclasses.replace(self, n_images=chain.n_images, times=None, seed=chain.seed,
                                   prompt=chain.prompts[0], negative_prompt=chain.negative_prompt[0],
                                   translation=chain.translations[0])
        return dataclasses.replace(edit.request(previous), only=[(0, index)])

    def kept(self, tokens: np.ndarray) -> KeptTokens:
        return KeptTokens.shifted(tokens, self.direction, self.rows)

    def describe(self) -> dict[str, Any]:
        return {"edit": "extend", "direction": self.direction, "rows": self.rows}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fill(Edit):
    """Every token outside `region` = (top, left, bottom, right) token cells kept, the inside drawn;
    `n_images` candidates to rank (see `Pipeline.fill`)."""

    region: tuple[int, int, int, int]
    n_images: int = 8

    def __post_init__(self):
        super().__post_init__()
        region = self.region
        four_numbers = isinstance(region, (tuple, list)) and len(region) == 4
        if not four_numbers or not all(is_whole_number(v) for v in region):
            raise ValueError(f"region is (top, left, bottom, right) in token cells (got {region!r}).")
        top, left, bottom, right = (int(v) for v in region)
        if not (0 <= top < bottom <= GRID_SIDE and 0 <= left < right <= GRID_SIDE):
            raise ValueError(f"The region to fill is (top, left, bottom, right) in token cells with "
                             f"0 ≤ top < bottom ≤ {GRID_SIDE} and 0 ≤ left < right ≤ {GRID_SIDE} "
                             f"(got {tuple(region)}).")
        object.__setattr__(self, "region", (top, left, bottom, right))

    def kept(self, tokens: np.ndarray) -> KeptTokens:
        return KeptTokens.outside(tokens, *self.region)

    def describe(self) -> dict[str, Any]:
        return {"edit": "fill", "region": list(self.region)}
