"""The prompt form's fields read and checked: every wrong field is named at once (fixing one does not reveal
the next), and each field's help text. Pure: no widgets here."""

from __future__ import annotations

import dataclasses

import numpy as np

from nbkit.generation.request import parse_seed
from nbkit.generation.sampling import SamplingSettings


@dataclasses.dataclass(frozen=True)
class FormValues:
    """What the form asks for, checked: the arguments of a `GenerationRequest`."""
    prompts: list[str]
    n_images: int
    seed: int | None
    sampling: dict


class FormErrors(ValueError):
    """Every field of the form that is wrong (`messages`, one a field), found at once: fixing one does not
    reveal the next."""

    def __init__(self, messages: list[str]):
        super().__init__(" ".join(messages))
        self.messages = messages


def read_form(prompts: str, n_images: int, seed: str, temperature: float, top_k: int, top_p: float,
              condition_scale: float) -> FormValues:
    """The form's raw values → arguments, or a FormErrors (a ValueError) that says what to fix in each
    wrong field, all of them."""
    errors: list[str] = []
    lines = [line.strip() for line in prompts.splitlines() if line.strip()]
    if not lines:
        errors.append("Type at least one prompt (one per line).")
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        errors.append(f"Images per prompt must be a whole number ≥ 1 (got {n_images!r}).")
    try:
        seed = parse_seed(seed)
    except ValueError as error:
        errors.append(str(error))
    sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p,
                "condition_scale": condition_scale}
    defaults = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "condition_scale": 10.0}
    for name, value in sampling.items():     # each setting checked alone, so that every bad one is named
        try:
            SamplingSettings(**{**defaults, name: value})
        except ValueError as error:
            errors.append(str(error))
    if errors:
        raise FormErrors(errors)
    return FormValues(lines, int(n_images), seed, sampling)


HELP = {   # every field's help, shown on hover (and read by screen readers)
    "prompts": "One prompt per line; each gets its own images. The model reads about 64 text tokens: "
               "longer prompts are cut, and the form says so.",
    "negative_prompt": "What the images should not show (super-conditioning steers away from it).",
    "n_images": "How many images each prompt gets (and each Variations / Extend run makes).",
    "seed": "Digits 0-9, or blank for a random one; the same seed and settings make the same images.",
    "temperature": "Above 0; lower is safer and more alike, higher more varied (1.0: as trained).",
    "top_k": "Draw each token from the k likeliest (a whole number ≥ 1).",
    "top_p": "In (0, 1]: draw from the likeliest tokens that together reach p; 1 turns it off.",
    "condition_scale": "≥ 0: how closely the images follow the prompt (super-conditioning; 10 is usual).",
    "keep_rows": "Variations keep this many rows of 16 from the top of the image you vary.",
    "extend_direction": "Extend continues an image to the right or down.",
    "extend_rows": "How many new rows (or columns) of 16 each extension draws.",
    "model": "A registered model, or a folder with config.json and flax_model.msgpack (e.g. ./mini): the "
             "list shows those found in the model cache and the working folder.",
    "upscaler": "A registered upscaler (esrgan-x4) or a local .pth / .safetensors weights file: the list "
                "shows those found in the model cache and the working folder.",
}
