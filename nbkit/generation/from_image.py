"""Starting from an image: variations, extending a picture, filling a region — as requests.

A source is an image's 256 tokens and the prompt to draw with. A PNG that nbkit saved gives both
exactly (from its metadata); any other image is encoded with the VQGAN encoder, and the prompt must
then be given. Each edit is a `GenerationRequest` whose `kept` tokens say what stays and whose
`source` says where it came from (recorded with every image, so `reproduce` can make it again).
The `Pipeline` methods `vary`, `extend` and `fill` build these and run them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nbkit.generation.kept import DIRECTIONS, Direction, KeptTokens, tokens_sha256
from nbkit.generation.request import GenerationRequest
from nbkit.generation.sampling import SamplingSettings
from nbkit.png import read_png_metadata


@dataclasses.dataclass(frozen=True, eq=False)
class SourceImage:
    """An image to start from: its tokens, and the prompt (and negative prompt) it was made with,
    when known."""

    tokens: np.ndarray               # (256,) int32
    prompt: str | None = None
    negative_prompt: str = ""
    name: str = "image"              # the file's name, for the record
    encoded: bool = False            # tokens from the VQGAN encoder, not from the image's metadata

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
                               metadata.get("negative_prompt") or "", path.name)
        return SourceImage(np.asarray(encode(path), np.int32), None, "", path.name, encoded=True)
    return SourceImage(np.asarray(encode(image), np.int32), None, "", "image", encoded=True)


def _prompt(source: SourceImage, prompt: str | None) -> str:
    chosen = prompt if prompt is not None else source.prompt
    if chosen is None:
        raise ValueError(f"{source.name} was not made by nbkit (or its metadata was stripped), so its prompt "
                         "is unknown: give one (prompt=…, --prompt TEXT) saying what the image shows.")
    return chosen


def _request(source: SourceImage, kept: KeptTokens, edit: dict[str, Any], n_images: int, seed: int | None,
             prompt: str | None, negative_prompt: str | None, settings: SamplingSettings | None):
    negative = source.negative_prompt if negative_prompt is None else negative_prompt
    return GenerationRequest([_prompt(source, prompt)], n_images, seed, settings or SamplingSettings(),
                             negative_prompt=negative, kept=kept, source={**source.describe(), **edit})


def variation_request(source: SourceImage, n_images: int = 4, keep_rows: int = 8, seed: int | None = None,
                      prompt: str | None = None, negative_prompt: str | None = None,
                      settings: SamplingSettings | None = None):
    """The first `keep_rows` rows of the source's 16 kept, the rest drawn anew."""
    kept = KeptTokens.first_rows(source.tokens, keep_rows)
    return _request(source, kept, {"edit": "vary", "keep_rows": keep_rows}, n_images, seed, prompt,
                    negative_prompt, settings)


def extension_request(source: SourceImage, direction: Direction = "down", rows: int = 8, n_images: int = 1,
                      seed: int | None = None, prompt: str | None = None, negative_prompt: str | None = None,
                      settings: SamplingSettings | None = None):
    """The source moved up (`down`) or left (`right`) by `rows` rows or columns; the new band drawn."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)} (got {direction!r}).")
    kept = KeptTokens.shifted(source.tokens, direction, rows)
    return _request(source, kept, {"edit": "extend", "direction": direction, "rows": rows}, n_images, seed,
                    prompt, negative_prompt, settings)


def fill_request(source: SourceImage, region: tuple[int, int, int, int], n_images: int = 8,
                 seed: int | None = None, prompt: str | None = None, negative_prompt: str | None = None,
                 settings: SamplingSettings | None = None):
    """Every token outside `region` = (top, left, bottom, right) token cells kept, the inside drawn."""
    if not isinstance(region, (tuple, list)) or len(region) != 4:
        raise ValueError(f"region is (top, left, bottom, right) in token cells (got {region!r}).")
    kept = KeptTokens.outside(source.tokens, *region)
    return _request(source, kept, {"edit": "fill", "region": list(region)}, n_images, seed, prompt,
                    negative_prompt, settings)
