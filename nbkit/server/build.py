"""A checked job body (protocol.JobInput) → what the Pipeline makes (GenerationRequest), reading a
variation's or extension's source image from the output folder.

Blocking file IO: call it off the event loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nbkit.generation.from_image import open_source
from nbkit.generation.request import GenerationRequest
from nbkit.server.folders import resolve_image
from nbkit.server.protocol import BadInput, JobInput


def translated(prompts: list[str], negative: str, choice: str, cache: str | None = None,
               loader: Any = None) -> tuple[list[str], list[str], list[dict | None]]:
    """The English prompts and negative prompts to draw, and what was typed (see
    `nbkit.text.translate.translate_prompts`); a translator that fails is a BadInput naming translate.
    The translator runs here, off the worker, like CLIP and the upscaler are loaded."""
    from nbkit.text.translate import translate_prompts

    try:
        return translate_prompts(prompts, negative, choice, cache, loader)
    except (OSError, ValueError) as error:
        raise BadInput("translate", str(error).splitlines()[0]) from None


def build_request(job: JobInput, out: Path, cache: str | None = None,
                  loader: Any = None) -> GenerationRequest:
    """What to make. A source image must be one nbkit saved (its tokens are in its metadata): the
    worker alone uses the device, so nothing is encoded here. `translate` other than off: the prompts
    and negative prompt translated to English first (`loader`: name → Translator, kept by the caller);
    `english_prompts`, sent after POST /api/translate, is the English a person checked and maybe edited:
    it is drawn, and the records say what the translator had given (translated again here, so that what
    a record says the translator gave is the translator's)."""
    if job.edit is None:
        prompts, negatives, translations = list(job.prompts), job.negative_prompt or "", None
        if job.translate != "off":
            typed = (prompts, negatives)
            prompts, negatives, translations = translated(*typed, job.translate, cache, loader)
            if job.english is not None or job.english_negative is not None:
                from nbkit.text.translate import use_edited_english
                try:
                    prompts, negatives, translations = use_edited_english(
                        *typed, (prompts, negatives, translations),
                        list(job.english) if job.english is not None else prompts, job.english_negative)
                except ValueError as error:
                    raise BadInput("english_prompts", str(error)) from None
        return GenerationRequest(prompts, job.n_images, job.seed, job.settings,
                                 negative_prompt=negatives, translations=translations)
    name, ref, edit = job.edit.name, job.edit.source, job.edit.edit
    field = f"{name}.image"

    def refuse_encoding(image: Any):
        raise BadInput(field, f"{ref.file} has no image tokens in its metadata: start from an image nbkit "
                              "saved.")

    source = open_source(resolve_image(out, ref.run, ref.file, field), refuse_encoding)
    if edit.prompt is None and source.prompt is None:
        raise BadInput("prompts", f"{ref.file} has no prompt in its metadata: send one (prompts).")
    try:
        return edit.request(source)
    except ValueError as error:
        raise BadInput(name, str(error)) from None
