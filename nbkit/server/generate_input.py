"""POST /generate (and /dalle) for the two clients that call it, dalle-playground and the official DALL·E mini
app: their bodies told apart and checked, each a `Generate` spec."""

from __future__ import annotations

import dataclasses
from typing import Any

from nbkit.generation.specs import Generate
from nbkit.server.protocol import BadInput, Limits, known_fields, text_field, whole_number


@dataclasses.dataclass(frozen=True)
class GenerateCall:
    """POST /generate from either client, and its spec. `client`: "playground" (dalle-playground: {"text",
    "num_images"}, answered with generatedImgs) or "app" (the official DALL·E mini app's backend.py:
    {"prompt"}, answered with images and version)."""

    client: str
    prompt: str
    n_images: int

    @property
    def spec(self) -> Generate:
        return Generate(prompts=[self.prompt], n_images=self.n_images)


def parse_generate(body: Any, limits: Limits, default_images: int) -> GenerateCall:
    """Tells the two clients apart by their body: the official app sends `prompt`, the playground
    `text`. The app names no count: it gets the server's default number of images."""
    if isinstance(body, dict) and "prompt" in body and "text" not in body:
        known_fields(body, "body", ("prompt",))
        return GenerateCall("app", text_field(body["prompt"], "prompt", limits.max_prompt_chars),
                            default_images)
    if not isinstance(body, dict):
        raise BadInput("body", 'Send a JSON object: {"text": "a red apple", "num_images": 1}, or '
                               '{"prompt": "a red apple"}.')
    if "text" not in body:
        raise BadInput("text", 'text is missing: send {"text": "a red apple", "num_images": 1} (or '
                               '{"prompt": "a red apple"}).')
    return GenerateCall("playground", text_field(body["text"], "text", limits.max_prompt_chars),
                        whole_number(body.get("num_images", 1), "num_images", 1, limits.max_images))


