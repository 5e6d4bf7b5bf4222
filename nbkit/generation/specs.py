"""What a person asks for, as one family of frozen specs: `Generate` (prompts → images) here, and the edits
of an image beside it (`Vary`, `Extend`, `Fill`, in `nbkit.generation.from_image`).

Every front end (the CLI, the notebook form, the server's protocol, `Pipeline.generate` and the run driver
`nbkit.output.runs.save_run`) parses its input into one spec, checked once when it is made, and the spec
turns itself into the pipeline's request: `spec.request(source)` is a `GenerationRequest` (`source`, the
image an edit starts from; None for `Generate`). A typed prompt in another language is translated where
the spec is: `spec.translated(choice, …)` is the same spec in English, recording what was typed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from nbkit.checks import is_whole_number
from nbkit.generation.request import GenerationRequest, check_seed
from nbkit.generation.sampling import SamplingSettings


@dataclasses.dataclass(frozen=True, kw_only=True)
class Spec:
    """What every spec shares: how many images (per prompt), the seed (None: drawn once, when the request
    is built) and the sampling settings. A subclass says what is drawn (`request`) and how a typed prompt
    is translated (`translated`); `needs_source`: whether `request` takes the image it starts from."""

    needs_source: ClassVar[bool] = False

    n_images: int = 1
    seed: int | None = None
    settings: SamplingSettings = SamplingSettings()

    def __post_init__(self):
        if not is_whole_number(self.n_images) or not 1 <= self.n_images <= 2**20:
            raise ValueError(f"n_images must be a whole number ≥ 1 (got {self.n_images!r}).")
        object.__setattr__(self, "n_images", int(self.n_images))
        object.__setattr__(self, "seed", check_seed(self.seed))
        if not isinstance(self.settings, SamplingSettings):
            raise TypeError(f"settings must be a SamplingSettings (got {type(self.settings).__name__}).")

    @property
    def texts(self) -> list[str]:
        """The texts a person typed (prompts and negative prompts): what a translator would read."""
        raise NotImplementedError

    def request(self, source: Any = None) -> GenerationRequest:
        """The pipeline's request for this spec (`source`: the `SourceImage` an edit starts from)."""
        raise NotImplementedError

    def translated(self, choice: str, cache: Any = None, loader: Callable | None = None) -> Spec:
        """This spec with its typed texts in English (`nbkit.text.translate.translate_prompts`: `choice`
        off, auto or a translator; `loader(name, cache)` a Translator), recording what was typed."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True, kw_only=True)
class Generate(Spec):
    """`n_images` images for each prompt. `negative_prompt`: one text for every prompt, or one per prompt;
    `translations`: per prompt, what was typed before it was translated (or None), recorded with the
    images and naming the run's folder (see `GenerationRequest`)."""

    prompts: Sequence[str]
    negative_prompt: str | Sequence[str] = ""
    translations: Sequence[Mapping[str, str] | None] | None = None

    def __post_init__(self):
        super().__post_init__()
        checked = self._request(0)        # the one check of prompts, negative prompts and translations
        object.__setattr__(self, "prompts", checked.prompts)
        object.__setattr__(self, "negative_prompt", checked.negative_prompt)
        object.__setattr__(self, "translations", checked.translations)

    def _request(self, seed: int | None) -> GenerationRequest:
        return GenerationRequest(self.prompts, self.n_images, seed, self.settings,
                                 negative_prompt=self.negative_prompt, translations=self.translations)

    @property
    def texts(self) -> list[str]:
        return [*self.prompts, *self.negative_prompt]

    def request(self, source: Any = None) -> GenerationRequest:
        if source is not None:
            raise ValueError("Generate draws from its prompts: it takes no source image (use Vary).")
        return self._request(self.seed)

    def translated(self, choice: str, cache: Any = None, loader: Callable | None = None) -> Generate:
        if choice == "off":
            return self
        from nbkit.text.translate import translate_prompts

        made = translate_prompts(list(self.prompts), self._typed_negative(), choice, cache, loader)
        return self._with(made)

    def with_english(self, machine: Generate, english: Sequence[str] | None,
                     english_negative: str | None = None) -> Generate:
        """This (typed) spec drawn from the English a person checked, and maybe edited, in place of the
        translator's (`machine`: `self.translated(…)`): `english` one text per prompt (None: as translated),
        `english_negative` the negative prompt's. The records say what the translator had given
        (`nbkit.text.translate.use_edited_english`)."""
        from nbkit.text.translate import use_edited_english

        given = (list(machine.prompts), list(machine.negative_prompt), list(machine.translations))
        return self._with(use_edited_english(list(self.prompts), self._typed_negative(), given,
                                             list(english) if english is not None else given[0],
                                             english_negative))

    def _with(self, made: tuple[list[str], list[str], list[dict | None]]) -> Generate:
        prompts, negatives, records = made
        return dataclasses.replace(self, prompts=prompts, negative_prompt=negatives, translations=records)

    def _typed_negative(self) -> str | list[str]:
        negatives = list(self.negative_prompt)
        return negatives[0] if len(set(negatives)) == 1 else negatives
