"""What to make: a request (prompts, count, seed, settings, negative prompts, kept tokens), checked once
where it enters, and the images it asks for as `ImageTask`s, each with everything its tokens depend on."""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from nbkit.checks import is_whole_number
from nbkit.generation.kept import KeptTokens
from nbkit.generation.sampling import SamplingSettings
from nbkit.text.tokenizer import check_prompts, check_text

SEED_LIMIT = 2**32
_ASCII_DIGITS = re.compile(r"[0-9]+")      # not str.isdigit: it takes "²" and "١٢"


def check_seed(seed: Any) -> int | None:
    """The one check of a seed, for every front end and the library: a whole number in [0, 2³²), or
    None for a random one."""
    if seed is None:
        return None
    if not is_whole_number(seed) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"The seed must be a whole number from 0 to {SEED_LIMIT - 1}, or none for a random "
                         f"one (got {seed!r}).")
    return int(seed)


def parse_seed(text: str) -> int | None:
    """A seed typed as text (a form field, a command-line option): digits 0-9, or blank for a random
    one; then `check_seed`."""
    text = str(text).strip()
    if not text:
        return None
    if not _ASCII_DIGITS.fullmatch(text):
        raise ValueError(f"The seed must be a whole number from 0 to {SEED_LIMIT - 1} in digits 0-9, or "
                         f"blank for a random one (got {text!r}).")
    return check_seed(int(text))


def draw_seed() -> int:
    """A random seed, the same on every host of a multi-host run."""
    seed = secrets.randbelow(2**31)
    if jax.process_count() > 1:
        seed = int(multihost_utils.broadcast_one_to_all(np.int32(seed)))
    return seed


def _per_prompt(value: Any, prompts: int, name: str, kind: type, what: str, optional: bool = False) -> tuple:
    """One value for every prompt, or one per prompt → a tuple with one per prompt."""
    fits = lambda v: isinstance(v, kind) or (optional and v is None)
    values = [value] * prompts if fits(value) or isinstance(value, (str, bytes)) else list(value)
    if len(values) != prompts or not all(fits(v) for v in values):
        raise ValueError(f"{name} must be one {what}, or one {what} per prompt ({prompts}); got {value!r}.")
    return tuple(values)


# What a record of a translated prompt may hold (`GenerationRequest.translations`; nbkit.text.translate):
# the prompt and negative prompt as typed, the translator and its revision ("" when none: the person wrote
# the English), and, when the person edited the English before drawing, "english_edited": "yes" and
# what the translator had given.
TRANSLATION_KEYS = ("typed_prompt", "typed_negative_prompt", "translator", "translator_revision",
                    "english_edited", "translator_english", "translator_negative_english")
TRANSLATION_TEXT_LIMIT = 4096


def clean_translation(value: Any) -> dict[str, str] | None:
    """A translation record read from outside (a PNG's metadata): its known keys with bounded text
    values, or None when it is not a mapping of them."""
    if not isinstance(value, Mapping):
        return None
    kept = {key: text for key, text in value.items() if key in TRANSLATION_KEYS and isinstance(text, str)
            and len(text) <= TRANSLATION_TEXT_LIMIT}
    return kept if kept.get("typed_prompt") is not None else None


@dataclasses.dataclass(frozen=True)
class ImageTask:
    """One image to make: everything its tokens depend on besides the model and the sampling settings.
    Its random key comes from (seed, prompt_index, image_index) alone, so tasks from different requests
    (or people) can share a batch and still get exactly their own images."""

    prompt: str
    seed: int
    prompt_index: int = 0
    image_index: int = 0
    negative_prompt: str = ""
    kept: KeptTokens | None = None


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    """What to make, checked once where it enters. A seed left as None is drawn here, once, so
    the request (and everything made from it) always knows its seed.

    `only`: make just these (prompt index, image index) images — the rest of a resumed run, or
    one image to reproduce; their keys are those they have in the whole request.
    `negative_prompt`: what the images should not show — one text for every prompt, or one per
    prompt; it takes the empty prompt's place in super-conditioning (logits = negative + scale ·
    (prompt − negative)). Empty means none: exactly the images made without one.
    `kept`: image tokens to keep rather than draw (variations, extending, filling a region) — one
    `KeptTokens` for every prompt, or one (or None) per prompt.
    `translations`: per prompt, what was typed before it was translated to the English in `prompts`
    (`typed_prompt`, `translator`, `translator_revision`; see `nbkit.text.translate`), or None;
    recorded with the images, and it names the run's folder.
    `source`: what the images started from (a file name, its tokens' hash, how many rows were kept…),
    recorded with them; it plays no part in making them.
    """

    prompts: Sequence[str]
    n_images: int = 1
    seed: int | None = None
    settings: SamplingSettings = SamplingSettings()
    only: Collection[tuple[int, int]] | None = None
    negative_prompt: str | Sequence[str] = ""
    kept: KeptTokens | Sequence[KeptTokens | None] | None = None
    source: Mapping[str, Any] | None = None
    translations: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None

    def __post_init__(self):
        object.__setattr__(self, "prompts", tuple(check_prompts(self.prompts)))
        count = len(self.prompts)
        object.__setattr__(self, "negative_prompt",
                           _per_prompt(self.negative_prompt, count, "negative_prompt", str, "text"))
        for index, negative in enumerate(self.negative_prompt):
            check_text(negative, f"Negative prompt {index}")
        object.__setattr__(self, "kept",
                           _per_prompt(self.kept, count, "kept", KeptTokens, "KeptTokens", optional=True))
        object.__setattr__(self, "translations", _per_prompt(self.translations, count, "translations",
                                                             Mapping, "mapping", optional=True))
        if self.source is not None:
            if not isinstance(self.source, Mapping):
                raise ValueError(f"source must be a mapping of what the images started from (got "
                                 f"{self.source!r}).")
            object.__setattr__(self, "source", dict(self.source))
        if not is_whole_number(self.n_images) or self.n_images < 1:
            raise ValueError(f"n_images must be a whole number ≥ 1 (got {self.n_images!r}).")
        seed = check_seed(self.seed)
        object.__setattr__(self, "seed", draw_seed() if seed is None else seed)
        if not isinstance(self.settings, SamplingSettings):
            raise TypeError(f"settings must be a SamplingSettings (got {type(self.settings).__name__}).")
        object.__setattr__(self, "n_images", int(self.n_images))
        if self.only is not None:
            only = frozenset((int(p), int(i)) for p, i in self.only)
            outside = [(p, i) for p, i in only if not (0 <= p < len(self.prompts) and 0 <= i < self.n_images)]
            if outside:
                raise ValueError(f"only= names images the request does not have: {sorted(outside)[:5]} "
                                 f"({len(self.prompts)} prompt(s) × {self.n_images} image(s)).")
            object.__setattr__(self, "only", only)

    @property
    def images(self) -> list[tuple[int, int]]:
        """(prompt index, image index) of each image to make, in order."""
        if self.only is not None:       # in order without listing the whole request (it may be huge)
            return sorted(self.only)
        return [(p, i) for p in range(len(self.prompts)) for i in range(self.n_images)]

    def tasks(self) -> list[ImageTask]:
        """The images to make, in order, each with all it depends on."""
        return [ImageTask(self.prompts[p], self.seed, p, i, self.negative_prompt[p], self.kept[p])
                for p, i in self.images]


