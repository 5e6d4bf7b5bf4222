"""POST /api/jobs, /api/translate and /api/upscale: their bodies checked into inputs, and a job's input
turned into what the queue makes. A job body becomes one spec (`Generate`, or an edit — `Vary`, `Extend`,
`Fill` — of a saved image), built and checked as the CLI and the notebook form build theirs;
`JobInput.request` translates it (as they do: `Spec.translated`) and turns it into its `GenerationRequest`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbkit.generation.from_image import Extend, Fill, Vary, open_source
from nbkit.generation.request import SEED_LIMIT, GenerationRequest
from nbkit.generation.specs import Generate, Spec
from nbkit.server.folders import resolve_image
from nbkit.server.protocol import (
    BadInput,
    Limits,
    image_reference,
    known_fields,
    plain_name,
    sampling_settings,
    shown,
    text_field,
    whole_number,
)

JOB_FIELDS = ("prompts", "prompt", "n_images", "seed", "temperature", "top_k", "top_p", "condition_scale",
              "negative_prompt", "vary", "extend", "fill", "translate", "english_prompts",
              "english_negative_prompt")
TRANSLATE_FIELDS = ("prompts", "prompt", "negative_prompt", "translate")
EDIT_FIELDS = {"vary": ("image", "keep_rows"), "extend": ("image", "direction", "rows"),
               "fill": ("image", "region")}
EDITS = {"vary": Vary, "extend": Extend, "fill": Fill}


@dataclasses.dataclass(frozen=True)
class SourceRef:
    """A saved image a variation or an extension starts from: its run folder and file name."""

    run: str
    file: str

    @property
    def name(self) -> str:
        """"<run>/<file>": how bodies and records name it."""
        return f"{self.run}/{self.file}"


@dataclasses.dataclass(frozen=True)
class JobInput:
    """A checked job body: its spec (`Generate`, or an edit — `Vary`, `Extend`, `Fill` — of the saved image
    `source`; `edit` names its field), and how typed prompts are translated. `request` turns it into what
    the queue makes."""

    spec: Spec
    source: SourceRef | None = None
    edit: str | None = None      # "vary", "extend" or "fill": the field an edit came in
    translate: str = "off"       # "off" (default), "auto" or a registered translator (nbkit.text.translate)
    english: tuple[str, ...] | None = None     # the English to draw in place of the translation (checked,
    english_negative: str | None = None        # maybe edited, by a person), and the negative prompt's

    def request(self, out: Path, cache: str | None = None, loader: Any = None) -> GenerationRequest:
        """What to make. A source image must be one nbkit saved (its tokens are in its metadata): the worker
        alone uses the device, so nothing is encoded here. `translate` other than off: the prompts and
        negative prompt translated to English first (`loader`: name → Translator, kept by the caller);
        `english`, sent after POST /api/translate, is the English a person checked and maybe edited: it is
        drawn, and the records say what the translator had given. Blocking file IO and the translator:
        call it off the event loop."""
        spec = self.spec
        if self.source is None:
            try:
                machine = spec.translated(self.translate, cache, loader)
            except (OSError, ValueError) as error:
                raise BadInput("translate", str(error).splitlines()[0]) from None
            if self.english is None and self.english_negative is None:
                return machine.request()
            try:
                return spec.with_english(machine, self.english, self.english_negative).request()
            except ValueError as error:
                raise BadInput("english_prompts", str(error)) from None
        name, ref, field = self.edit, self.source, f"{self.edit}.image"

        def refuse_encoding(image: Any):
            raise BadInput(field, f"{ref.file} has no image tokens in its metadata: start from an image "
                                  "nbkit saved.")

        source = open_source(resolve_image(out, ref.run, ref.file, field), refuse_encoding)
        # Recorded as "<run>/<file>", the name /api/runs gives it, so that a saved run says what it was
        # made from and a reopened extension is shown joined to it (folders.edit_source reads it back).
        source = dataclasses.replace(source, name=ref.name)
        if spec.prompt is None and source.prompt is None:
            raise BadInput("prompts", f"{ref.file} has no prompt in its metadata: send one (prompts).")
        try:
            return spec.request(source)
        except ValueError as error:
            raise BadInput(name, str(error)) from None


def _prompts(body: dict, limits: Limits) -> tuple[str, ...] | None:
    """prompt (one text) or prompts (a list), each bounded; None when neither is sent."""
    if "prompt" in body and "prompts" in body:
        raise BadInput("prompt", "Send either prompt (one text) or prompts (a list), not both.")
    if "prompt" in body:
        return (text_field(body["prompt"], "prompt", limits.max_prompt_chars),)
    if "prompts" not in body:
        return None
    given = body["prompts"]
    if not isinstance(given, list) or not given:
        raise BadInput("prompts", f"prompts must be a non-empty list of texts (got {given!r}).")
    if len(given) > limits.max_images:
        raise BadInput("prompts", f"{len(given)} prompts; this server makes at most {limits.max_images} "
                                  "images a job (--max-images): send fewer.")
    return tuple(text_field(p, f"prompts[{i}]", limits.max_prompt_chars) for i, p in enumerate(given))


def _translate_choice(body: dict, default: str) -> str:
    from nbkit.weights.registry import TRANSLATOR_MODELS

    translate = body.get("translate", default)
    if translate not in ("off", "auto", *TRANSLATOR_MODELS):
        raise BadInput("translate", f"translate must be off, auto or one of {', '.join(TRANSLATOR_MODELS)} "
                                    f"(got {shown(translate)}).")
    return translate


def _english(body: dict, prompts: tuple[str, ...] | None, translate: str,
             limits: Limits) -> tuple[tuple[str, ...] | None, str | None]:
    """english_prompts (one per prompt) and english_negative_prompt: what a person checked in place of
    the translation; they go with translate other than off."""
    english, negative = body.get("english_prompts"), body.get("english_negative_prompt")
    for field, value in (("english_prompts", english), ("english_negative_prompt", negative)):
        if value is not None and translate == "off":
            raise BadInput(field, f"{field} goes with translate auto or a translator (it replaces their "
                                  "English): send it with translate, or send the English as prompts.")
    if english is not None:
        count = len(prompts or ())
        if not isinstance(english, list) or len(english) != count:
            raise BadInput("english_prompts", f"english_prompts must be a list of {count} text(s), one per "
                                              f"prompt (got {shown(english)}).")
        english = tuple(text_field(text, f"english_prompts[{i}]", limits.max_prompt_chars)
                        for i, text in enumerate(english))
    if negative is not None:
        negative = text_field(negative, "english_negative_prompt", limits.max_prompt_chars, blank_ok=True)
    return english, negative


def field_errors(body: Any, limits: Limits) -> list[BadInput]:
    """Every field of a job body that is wrong on its own, checked by the same checks as `parse_job` (which
    stops at the first): what a form shows at once. Fields that are only wrong together are not listed."""
    if not isinstance(body, dict):
        return []
    checks: dict[str, Callable[[], Any]] = {
        "n_images": lambda: whole_number(body["n_images"], "n_images", 1, limits.max_images),
        "seed": lambda: body["seed"] is None or whole_number(body["seed"], "seed", 0, SEED_LIMIT - 1),
        "negative_prompt": lambda: body["negative_prompt"] is None or text_field(
            body["negative_prompt"], "negative_prompt", limits.max_prompt_chars, blank_ok=True),
        **{name: (lambda name=name: sampling_settings({name: body[name]}, limits))
           for name in ("temperature", "top_k", "top_p", "condition_scale")},
    }
    found = []
    if isinstance(body.get("prompts"), list):
        for index, text in enumerate(body["prompts"][:limits.max_images]):
            try:
                text_field(text, f"prompts[{index}]", limits.max_prompt_chars)
            except BadInput as error:
                found.append(error)
    for name, check in checks.items():
        if name in body:
            try:
                check()
            except BadInput as error:
                found.append(error)
    return found


def parse_job(body: Any, limits: Limits) -> JobInput:
    """POST /api/jobs's body → JobInput, or BadInput naming the first field that is wrong."""
    body = known_fields(body, "body", JOB_FIELDS)
    prompts = _prompts(body, limits)
    edits = [name for name in EDITS if body.get(name) is not None]
    if len(edits) > 1:
        raise BadInput(edits[1], f"Send one of vary, extend and fill (got {' and '.join(edits)}).")
    if prompts is None and not edits:
        raise BadInput("prompts", 'prompts is missing: send {"prompts": ["a red apple"]} (or "prompt").')
    if edits and prompts is not None and len(prompts) > 1:
        raise BadInput("prompts", f"A {edits[0]} job draws with one prompt (got {len(prompts)}).")
    n_images = whole_number(body.get("n_images", 1), "n_images", 1, limits.max_images)
    total = n_images * (len(prompts) if prompts else 1)
    if total > limits.max_images:
        raise BadInput("n_images", f"{len(prompts)} prompts × n_images {n_images} = {total} images; this "
                                   f"server makes at most {limits.max_images} a job (--max-images): ask "
                                   "for fewer.")
    seed = body.get("seed")
    if seed is not None:
        seed = whole_number(seed, "seed", 0, SEED_LIMIT - 1)
    negative = body.get("negative_prompt")
    if negative is not None:
        negative = text_field(negative, "negative_prompt", limits.max_prompt_chars, blank_ok=True)
    settings = sampling_settings(body, limits)
    name, source = (edits[0], None) if edits else (None, None)
    if name is not None:
        given = known_fields(body[name], name, EDIT_FIELDS[name])
        source = SourceRef(*image_reference(given.pop("image", None), f"{name}.image"))
        try:  # the one check of an edit's numbers is the spec's own
            spec = EDITS[name](**given, n_images=n_images, seed=seed, prompt=prompts[0] if prompts else None,
                               negative_prompt=negative, settings=settings)
        except (TypeError, ValueError) as error:
            wrong = next((key for key in EDIT_FIELDS[name] if key in str(error)), None)
            raise BadInput(f"{name}.{wrong}" if wrong else name, f"{name}: {error}") from None
    else:
        try:
            spec = Generate(prompts=prompts, n_images=n_images, seed=seed, negative_prompt=negative or "",
                            settings=settings)
        except ValueError as error:
            raise BadInput("prompts", str(error)) from None
    translate = _translate_choice(body, "off")
    if translate != "off" and name is not None:
        raise BadInput("translate", "translate applies to new prompts: translate the prompt first, "
                                    "then vary.")
    english, english_negative = _english(body, prompts, translate, limits)
    return JobInput(spec, source, name, translate, english, english_negative)


@dataclasses.dataclass(frozen=True)
class TranslateInput:
    """POST /api/translate: prompts (and a negative prompt) to translate without drawing."""

    prompts: tuple[str, ...]
    negative_prompt: str
    translate: str               # "auto" (default here), "off" or a registered translator

    def translated(self, cache: str | None = None, loader: Any = None) -> Generate:
        """The English a job with `translate` would draw (a spec: its prompts, negative prompts and records),
        translated as a job's are (`Generate.translated`); a translator that fails is a BadInput naming
        translate. Call it off the event loop, like the job's `request`."""
        try:
            return Generate(prompts=self.prompts, negative_prompt=self.negative_prompt).translated(
                self.translate, cache, loader)
        except (OSError, ValueError) as error:
            raise BadInput("translate", str(error).splitlines()[0]) from None


def parse_translate(body: Any, limits: Limits) -> TranslateInput:
    """POST /api/translate's body → TranslateInput, or BadInput naming the field."""
    body = known_fields(body, "body", TRANSLATE_FIELDS)
    prompts = _prompts(body, limits)
    if prompts is None:
        raise BadInput("prompts", 'prompts is missing: send {"prompts": ["一只猫"], "translate": "auto"}.')
    negative = body.get("negative_prompt")
    negative = "" if negative is None else text_field(negative, "negative_prompt", limits.max_prompt_chars,
                                                 blank_ok=True)
    return TranslateInput(prompts, negative, _translate_choice(body, "auto"))


@dataclasses.dataclass(frozen=True)
class UpscaleInput:
    """POST /api/upscale: a saved image of a run, to be made larger by the server's upscaler."""

    source: SourceRef


def parse_upscale(body: Any) -> UpscaleInput:
    """POST /api/upscale's body {"run", "file"} → UpscaleInput, or BadInput naming the field."""
    body = known_fields(body, "body", ("run", "file"))
    for field in ("run", "file"):
        if field not in body:
            raise BadInput(field, f'{field} is missing: send {{"run": "<run folder>", "file": '
                                  '"<image file>"} as /api/runs lists them.')
        if not plain_name(body[field]):
            raise BadInput(field, f"{field} must be a plain file or folder name as /api/runs lists it "
                                  f"(got {body[field]!r}).")
    return UpscaleInput(SourceRef(body["run"], body["file"]))


