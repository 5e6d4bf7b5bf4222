"""What goes over the wire, shared by every route: the checks of a body's fields and the answers' JSON
shapes.

Requests are checked where they enter: a route's parser (`nbkit.server.job_input` for /api/jobs,
/api/translate and /api/upscale; `nbkit.server.generate_input` for the two /generate clients) turns a
JSON body into a spec or raises `BadInput`, which names the field and says what to send instead; every
number is bounded by the checks here, so nothing a client sends fails later on the worker. Answers:
`as_json` turns the job queue's dataclasses (statuses, saved images, progress with previews) into JSON,
each image with its URL.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image
from starlette.responses import JSONResponse

from nbkit.generation.sampling import SamplingSettings
from nbkit.limits import MAX_JSON_DEPTH
from nbkit.text.tokenizer import lone_surrogate

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


def shown(value: Any) -> str:
    """A value as an error quotes it: short, whatever was sent."""
    if isinstance(value, int) and value.bit_length() > 100:
        return f"a number of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def whole_number(value: Any, field: str, low: int, high: int) -> int:
    """A JSON number that is a whole number from `low` to `high` (1.0 counts; true, 1.5 and 3e9 do not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value) \
            or value != int(value) or not low <= value <= high:
        raise BadInput(field, f"{field} must be a whole number from {low} to {high} (got {shown(value)}).")
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
        raise BadInput(field, f"{field} must be a number {bound} to {high:g} (got {shown(value)}).")
    return float(value)


def text_field(value: Any, field: str, max_chars: int, blank_ok: bool = False) -> str:
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
