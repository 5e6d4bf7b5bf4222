"""What goes over the wire: request bodies checked into typed inputs, and the answers' JSON shapes.

Requests are checked where they enter: `parse_job`, `parse_playground` and `parse_app` turn a JSON body
into what to make or raise `BadInput`, which names the field and says what to send instead; every number
is bounded here, so nothing a client sends fails later on the worker. Answers: `as_json` turns the job
queue's dataclasses (statuses, saved images, progress with previews) into JSON, each image with its URL.

Over 350 lines: one parser a route (jobs, translate, upscale, the two /generate clients) and the answers;
issue 23 plans one module a route, with the specs turning themselves into requests.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image
from starlette.responses import JSONResponse

from nbkit.generation.from_image import Edit, Extend, Fill, Vary
from nbkit.generation.request import SEED_LIMIT
from nbkit.generation.sampling import SamplingSettings
from nbkit.limits import MAX_JSON_DEPTH
from nbkit.text.tokenizer import lone_surrogate

JOB_FIELDS = ("prompts", "prompt", "n_images", "seed", "temperature", "top_k", "top_p", "condition_scale",
              "negative_prompt", "vary", "extend", "fill", "translate", "english_prompts",
              "english_negative_prompt")
TRANSLATE_FIELDS = ("prompts", "prompt", "negative_prompt", "translate")
EDIT_FIELDS = {"vary": ("image", "keep_rows"), "extend": ("image", "direction", "rows"),
               "fill": ("image", "region")}
EDITS = {"vary": Vary, "extend": Extend, "fill": Fill}
MAX_TEMPERATURE = 100.0          # far past any useful value; keeps the logits finite
MAX_CONDITION_SCALE = 100.0
MAX_RUNS_LISTED = 1000
PREVIEW_QUALITY = 70             # JPEG quality of the previews: small, and they are soon replaced


class BadInput(ValueError):
    """A request that cannot be served as sent: `field` names what to fix; `status` is the HTTP answer."""

    def __init__(self, field: str | None, message: str, status: int = 400):
        super().__init__(message)
        self.field, self.message, self.status = field, message, status
        self.others: list[BadInput] = []      # further wrong fields, shown with it (`field_errors`)


@dataclasses.dataclass(frozen=True)
class Limits:
    """What this server accepts: set by its options and its model."""

    max_images: int
    max_prompt_chars: int
    codebook_size: int           # top_k above this means nothing (and is refused)


# ---- fields


def _finite(value: int | float) -> bool:
    """A float that is not inf or NaN, or an int (JSON ints have no bound: 10**400 is no float)."""
    return isinstance(value, int) or math.isfinite(value)


def _shown(value: Any) -> str:
    """A value as an error quotes it: short, whatever was sent."""
    if isinstance(value, int) and value.bit_length() > 100:
        return f"a number of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def whole_number(value: Any, field: str, low: int, high: int) -> int:
    """A JSON number that is a whole number from `low` to `high` (1.0 counts; true, 1.5 and 3e9 do not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value) \
            or value != int(value) or not low <= value <= high:
        raise BadInput(field, f"{field} must be a whole number from {low} to {high} (got {_shown(value)}).")
    return int(value)


def query_count(text: str, field: str, low: int, high: int) -> int:
    """A count from a query string: ASCII digits only (str.isdigit also takes '²' and '٣')."""
    if not (0 < len(text) <= 9 and all("0" <= c <= "9" for c in text)):
        raise BadInput(field, f"{field} must be a whole number from {low} to {high} (got {text!r}).")
    return whole_number(int(text), field, low, high)


def _real(value: Any, field: str, low: float, high: float, low_open: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value) \
            or not (low < value if low_open else low <= value) or value > high:
        bound = f"above {low:g}" if low_open else f"from {low:g}"
        raise BadInput(field, f"{field} must be a number {bound} to {high:g} (got {_shown(value)}).")
    return float(value)


def _text(value: Any, field: str, max_chars: int, blank_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise BadInput(field, f"{field} must be a string (got {type(value).__name__} {value!r}).")
    position = lone_surrogate(value)
    if position is not None:
        raise BadInput(field, f"{field} holds a lone surrogate (\\u{ord(value[position]):04x}) at character "
                              f"{position}: that is not a character and cannot be saved. Send UTF-8 text.")
    if not blank_ok and not value.strip():
        raise BadInput(field, f"{field} is empty: say what the image should show, e.g. \"a red apple\".")
    if len(value) > max_chars:
        raise BadInput(field, f"{field} is {len(value)} characters long; this server takes at most "
                              f"{max_chars} (the model reads only the first 64 tokens anyway).")
    return value


def known_fields(value: Any, field: str, known: tuple[str, ...]) -> dict:
    """A JSON object with no fields but `known`."""
    if not isinstance(value, dict):
        raise BadInput(field, f"{field} must be a JSON object with the fields {', '.join(known)} "
                              f"(got {type(value).__name__}).")
    unknown = [name for name in value if name not in known]
    if unknown:
        raise BadInput(f"{field}.{unknown[0]}" if field != "body" else unknown[0],
                       f"Unknown field {unknown[0]!r} in {field}: the fields are {', '.join(known)}.")
    return value


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON text (brackets inside strings are not counted), found
    before parsing: Python's parser recurses, and 30000 levels would be a RecursionError."""
    depth = deepest = 0
    for bracket in re.findall(r"[\[\]{}]", _JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_body(body: bytes) -> Any:
    """A request body as JSON (the gate has checked its content type where one is required), nested at
    most MAX_JSON_DEPTH deep."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("body", "The body is not UTF-8 text: send JSON.") from None
    if json_depth(text) > MAX_JSON_DEPTH:
        raise BadInput("body", f"The body nests arrays and objects more than {MAX_JSON_DEPTH} deep: send "
                               'an object such as {"prompts": ["a red apple"], "n_images": 1}.')
    try:
        return json.loads(text)
    except ValueError as error:
        raise BadInput("body", f"The body is not valid JSON ({error}): send an object such as "
                               '{"prompts": ["a red apple"], "n_images": 1}.') from None


def sampling_settings(body: dict, limits: Limits) -> SamplingSettings:
    """temperature, top_k, top_p and condition_scale, each bounded (unset: the model's defaults)."""
    top_k = body.get("top_k")
    return SamplingSettings(
        temperature=_real(body.get("temperature"), "temperature", 0.0, MAX_TEMPERATURE, low_open=True),
        top_k=None if top_k is None else whole_number(top_k, "top_k", 1, limits.codebook_size),
        top_p=_real(body.get("top_p"), "top_p", 0.0, 1.0, low_open=True),
        condition_scale=_real(body.get("condition_scale", 10.0), "condition_scale", 0.0, MAX_CONDITION_SCALE))


def plain_name(name: Any) -> bool:
    """A file or folder name that stays where it is put: no separators, no `..`, not hidden."""
    return (isinstance(name, str) and 0 < len(name) <= 255 and not name.startswith(".")
            and not any(bad in name for bad in ("/", "\\", "\0", ":")) and lone_surrogate(name) is None)


def image_reference(value: Any, field: str) -> tuple[str, str]:
    """"<run>/<file>" → (run, file); each a plain name (checked again where files are opened)."""
    if not isinstance(value, str) or value.count("/") != 1:
        raise BadInput(field, f"{field} must be \"<run>/<file>\", an image's run folder and file name as "
                              f"/api/runs lists them (got {value!r}).")
    run, file = value.split("/")
    for name in (run, file):
        if not plain_name(name):
            raise BadInput(field, f"{field}: {name!r} is not a plain file or folder name.")
    return run, file


# ---- jobs


@dataclasses.dataclass(frozen=True)
class SourceRef:
    """A saved image a variation or an extension starts from: its run folder and file name."""

    run: str
    file: str


@dataclasses.dataclass(frozen=True)
class EditInput:
    """A variation, extension or fill: the saved image it starts from, and the typed edit (`Vary`, `Extend`,
    `Fill`, checked when made) that says what is kept. `name`: its field ("vary", "extend", "fill")."""

    name: str
    source: SourceRef
    edit: Edit


@dataclasses.dataclass(frozen=True)
class JobInput:
    """A checked job body. `prompts` None: a variation's or extension's source image's own prompt."""

    prompts: tuple[str, ...] | None
    n_images: int
    seed: int | None
    settings: SamplingSettings
    negative_prompt: str | None
    edit: EditInput | None = None
    translate: str = "off"       # "off" (default), "auto" or a registered translator (nbkit.text.translate)
    english: tuple[str, ...] | None = None     # the English to draw in place of the translation (checked,
    english_negative: str | None = None        # maybe edited, by a person), and the negative prompt's


def _prompts(body: dict, limits: Limits) -> tuple[str, ...] | None:
    """prompt (one text) or prompts (a list), each bounded; None when neither is sent."""
    if "prompt" in body and "prompts" in body:
        raise BadInput("prompt", "Send either prompt (one text) or prompts (a list), not both.")
    if "prompt" in body:
        return (_text(body["prompt"], "prompt", limits.max_prompt_chars),)
    if "prompts" not in body:
        return None
    given = body["prompts"]
    if not isinstance(given, list) or not given:
        raise BadInput("prompts", f"prompts must be a non-empty list of texts (got {given!r}).")
    if len(given) > limits.max_images:
        raise BadInput("prompts", f"{len(given)} prompts; this server makes at most {limits.max_images} "
                                  "images a job (--max-images): send fewer.")
    return tuple(_text(p, f"prompts[{i}]", limits.max_prompt_chars) for i, p in enumerate(given))


def _translate_choice(body: dict, default: str) -> str:
    from nbkit.weights.registry import TRANSLATOR_MODELS

    translate = body.get("translate", default)
    if translate not in ("off", "auto", *TRANSLATOR_MODELS):
        raise BadInput("translate", f"translate must be off, auto or one of {', '.join(TRANSLATOR_MODELS)} "
                                    f"(got {_shown(translate)}).")
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
                                              f"prompt (got {_shown(english)}).")
        english = tuple(_text(text, f"english_prompts[{i}]", limits.max_prompt_chars)
                        for i, text in enumerate(english))
    if negative is not None:
        negative = _text(negative, "english_negative_prompt", limits.max_prompt_chars, blank_ok=True)
    return english, negative


def field_errors(body: Any, limits: Limits) -> list[BadInput]:
    """Every field of a job body that is wrong on its own, checked by the same checks as `parse_job` (which
    stops at the first): what a form shows at once. Fields that are only wrong together are not listed."""
    if not isinstance(body, dict):
        return []
    checks: dict[str, Callable[[], Any]] = {
        "n_images": lambda: whole_number(body["n_images"], "n_images", 1, limits.max_images),
        "seed": lambda: body["seed"] is None or whole_number(body["seed"], "seed", 0, SEED_LIMIT - 1),
        "negative_prompt": lambda: body["negative_prompt"] is None or _text(
            body["negative_prompt"], "negative_prompt", limits.max_prompt_chars, blank_ok=True),
        **{name: (lambda name=name: sampling_settings({name: body[name]}, limits))
           for name in ("temperature", "top_k", "top_p", "condition_scale")},
    }
    found = []
    if isinstance(body.get("prompts"), list):
        for index, text in enumerate(body["prompts"][:limits.max_images]):
            try:
                _text(text, f"prompts[{index}]", limits.max_prompt_chars)
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
        negative = _text(negative, "negative_prompt", limits.max_prompt_chars, blank_ok=True)
    settings = sampling_settings(body, limits)
    edit = None
    if edits:
        name = edits[0]
        given = known_fields(body[name], name, EDIT_FIELDS[name])
        source = SourceRef(*image_reference(given.pop("image", None), f"{name}.image"))
        make = EDITS[name]
        try:  # the one check of an edit's numbers is the builder's own
            typed = make(**given, n_images=n_images, seed=seed, prompt=prompts[0] if prompts else None,
                         negative_prompt=negative, settings=settings)
        except (TypeError, ValueError) as error:
            wrong = next((key for key in EDIT_FIELDS[name] if key in str(error)), None)
            raise BadInput(f"{name}.{wrong}" if wrong else name, f"{name}: {error}") from None
        edit = EditInput(name, source, typed)
    translate = _translate_choice(body, "off")
    if translate != "off" and edit is not None:
        raise BadInput("translate", "translate applies to new prompts: translate the prompt first, "
                                    "then vary.")
    english, english_negative = _english(body, prompts, translate, limits)
    return JobInput(prompts, n_images, seed, settings, negative, edit, translate, english, english_negative)


@dataclasses.dataclass(frozen=True)
class TranslateInput:
    """POST /api/translate: prompts (and a negative prompt) to translate without drawing."""

    prompts: tuple[str, ...]
    negative_prompt: str
    translate: str               # "auto" (default here), "off" or a registered translator


def parse_translate(body: Any, limits: Limits) -> TranslateInput:
    """POST /api/translate's body → TranslateInput, or BadInput naming the field."""
    body = known_fields(body, "body", TRANSLATE_FIELDS)
    prompts = _prompts(body, limits)
    if prompts is None:
        raise BadInput("prompts", 'prompts is missing: send {"prompts": ["一只猫"], "translate": "auto"}.')
    negative = body.get("negative_prompt")
    negative = "" if negative is None else _text(negative, "negative_prompt", limits.max_prompt_chars,
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


# ---- the two /generate clients


@dataclasses.dataclass(frozen=True)
class GenerateCall:
    """POST /generate from either client. `client`: "playground" (dalle-playground: {"text",
    "num_images"}, answered with generatedImgs) or "app" (the official DALL·E mini app's backend.py:
    {"prompt"}, answered with images and version)."""

    client: str
    prompt: str
    n_images: int


def parse_generate(body: Any, limits: Limits, default_images: int) -> GenerateCall:
    """Tells the two clients apart by their body: the official app sends `prompt`, the playground
    `text`. The app names no count: it gets the server's default number of images."""
    if isinstance(body, dict) and "prompt" in body and "text" not in body:
        known_fields(body, "body", ("prompt",))
        return GenerateCall("app", _text(body["prompt"], "prompt", limits.max_prompt_chars), default_images)
    if not isinstance(body, dict):
        raise BadInput("body", 'Send a JSON object: {"text": "a red apple", "num_images": 1}, or '
                               '{"prompt": "a red apple"}.')
    if "text" not in body:
        raise BadInput("text", 'text is missing: send {"text": "a red apple", "num_images": 1} (or '
                               '{"prompt": "a red apple"}).')
    return GenerateCall("playground", _text(body["text"], "text", limits.max_prompt_chars),
                        whole_number(body.get("num_images", 1), "num_images", 1, limits.max_images))


# ---- answers


def error_response(status: int, field: str | None, message: str, headers: dict | None = None,
                   errors: Sequence[tuple[str | None, str]] = ()) -> JSONResponse:
    """{"error", "field"}: the first thing to fix; with `errors`, every field that is wrong
    ({"errors": [{"field", "error"}, …]}, the first included), so that a form shows them all at once."""
    body: dict[str, Any] = {"error": message, "field": field}
    if len(errors) > 1:
        body["errors"] = [{"field": name, "error": text} for name, text in errors]
    return JSONResponse(body, status, headers=headers)


def image_url(prefix: str, run: str, file: str) -> str:
    """An image's address, under /t/<token>/ when the request came that way (<img> sends no headers)."""
    return f"{prefix}/api/images/{quote(run)}/{quote(file)}"


def jpeg_base64(pixels: np.ndarray, quality: int = 90) -> str:
    """An image as base64 JPEG text: what previews and the /generate answers carry."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, "JPEG", quality=quality)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def as_json(payload: Any, prefix: str) -> Any:
    """The job queue's dataclasses as clients get them: every saved image with its `url`, every preview
    as a JPEG data URL."""
    if dataclasses.is_dataclass(payload) and not isinstance(payload, type):
        fields = {f.name: getattr(payload, f.name) for f in dataclasses.fields(payload)}
        if "pixels" in fields:
            pixels = fields.pop("pixels")
            return {**fields, "data": "data:image/jpeg;base64," + jpeg_base64(pixels, PREVIEW_QUALITY)}
        data = {name: as_json(value, prefix) for name, value in fields.items()}
        if "run" in fields and "file" in fields:
            data["url"] = image_url(prefix, fields["run"], fields["file"])
        return data
    if isinstance(payload, (list, tuple)):
        return [as_json(item, prefix) for item in payload]
    if isinstance(payload, dict):
        return {name: as_json(value, prefix) for name, value in payload.items()}
    return payload


def sse(kind: str, data: Any) -> str:
    """One Server-Sent Event."""
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
