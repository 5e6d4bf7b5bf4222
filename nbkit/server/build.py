"""A checked job body (protocol.JobInput) → what the Pipeline makes (GenerationRequest), reading a
variation's or extension's source image from the output folder.

Blocking file IO: call it off the event loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nbkit.generation.from_image import extension_request, open_source, variation_request
from nbkit.generation.request import GenerationRequest
from nbkit.server.folders import resolve_image
from nbkit.server.protocol import BadInput, ExtendInput, JobInput


def build_request(job: JobInput, out: Path) -> GenerationRequest:
    """What to make. A source image must be one nbkit saved (its tokens are in its metadata): the
    worker alone uses the device, so nothing is encoded here."""
    edit = job.edit
    if edit is None:
        return GenerationRequest(job.prompts, job.n_images, job.seed, job.settings,
                                 negative_prompt=job.negative_prompt or "")
    field = "extend.image" if isinstance(edit, ExtendInput) else "vary.image"

    def refuse_encoding(image: Any):
        raise BadInput(field, f"{edit.source.file} has no image tokens in its metadata: start from an image "
                              "nbkit saved.")

    source = open_source(resolve_image(out, edit.source.run, edit.source.file, field), refuse_encoding)
    prompt = job.prompts[0] if job.prompts else None
    if prompt is None and source.prompt is None:
        raise BadInput("prompts", f"{edit.source.file} has no prompt in its metadata: send one (prompts).")
    try:
        if isinstance(edit, ExtendInput):
            return extension_request(source, edit.direction, edit.rows, job.n_images, job.seed, prompt,
                                     job.negative_prompt, job.settings)
        return variation_request(source, job.n_images, edit.keep_rows, job.seed, prompt, job.negative_prompt,
                                 job.settings)
    except ValueError as error:
        raise BadInput(field.split(".")[0], str(error)) from None
