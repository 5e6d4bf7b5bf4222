"""The HTTP API of `nbkit serve` (Starlette), its gate (token, CORS), and uvicorn around it.

Requests are checked where they enter: `parse_job` and `parse_playground` turn a JSON body into what
to make or raise `BadInput`, which names the field and says what to send instead. Files are read only
through `resolve_run` and `resolve_image`: a run is a plain folder name directly in the output folder,
an image a file its manifest lists (`RunFolder.image_path`), so nothing a request says reaches outside
the output folder.

The gate is written by hand rather than with Starlette's CORSMiddleware because the policy depends on
the route: the dalle-playground page (on GitHub Pages) may call only the playground's routes, while
origins given with --cors-origin may call everything. It also moves `/t/<token>/…` onto the routes (as
the ASGI root path), so that a token pasted in an address works for pages that send no headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import secrets
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from nbkit import __version__
from nbkit.generation.from_image import extension_request, open_source, variation_request
from nbkit.generation.kept import DIRECTIONS
from nbkit.generation.pipeline import Pipeline
from nbkit.generation.request import SEED_LIMIT, GenerationRequest
from nbkit.generation.sampling import SamplingSettings
from nbkit.output.runs import rerank_folder
from nbkit.output.storage import RunFolder
from nbkit.server.jobs import (
    FINAL_STATES,
    Job,
    JobQueue,
    QueueFull,
    Stopping,
    jpeg_base64,
    one_line,
    saved_images,
)

STATIC = Path(__file__).parent / "static"
PLAYGROUND_ORIGIN = "https://saharmor.github.io"      # where the dalle-playground page is served from
PLAYGROUND_ROUTES = ("/", "/dalle", "/generate")
ALLOWED_HEADERS = ("authorization", "bypass-tunnel-reminder", "content-type", "accept", "cache-control",
                   "last-event-id")
KEEPALIVE_S = 15.0               # an SSE comment this often keeps proxies and tunnels from closing a stream
JOB_FIELDS = ("prompts", "prompt", "n_images", "seed", "temperature", "top_k", "top_p", "condition_scale",
              "negative_prompt", "vary", "extend")
GRID_ROWS = 16                   # image token rows (and columns) of the published models


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """What `nbkit serve` (or `nbkit.colab.serve`) was asked for."""

    out: Path
    host: str = "127.0.0.1"
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_queue: int = 16
    max_images: int = 16
    max_prompt_chars: int = 300
    max_body_bytes: int = 64 * 1024
    preview_every: int | None = 64
    model: str = "mini"
    vqgan: str = "vqgan"
    clip: str | None = "clip-b32"
    cache: str | None = None


# ---- bad input


class BadInput(ValueError):
    """A request that cannot be served as sent: `field` names what to fix; `status` is the HTTP answer."""

    def __init__(self, field: str | None, message: str, status: int = 400):
        super().__init__(message)
        self.field, self.message, self.status = field, message, status


def _whole(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or not low <= value <= high:
        raise BadInput(field, f"{field} must be a whole number from {low} to {high} (got {value!r}).")
    return int(value)


def _text(value: Any, field: str, max_chars: int, blank_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise BadInput(field, f"{field} must be a string (got {type(value).__name__} {value!r}).")
    if not blank_ok and not value.strip():
        raise BadInput(field, f"{field} is empty: say what the image should show, e.g. \"a red apple\".")
    if len(value) > max_chars:
        raise BadInput(field, f"{field} is {len(value)} characters long; this server takes at most "
                              f"{max_chars} (the model reads only the first 64 tokens anyway).")
    return value


def _object(value: Any, field: str, known: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise BadInput(field, f"{field} must be a JSON object with the fields {', '.join(known)} "
                              f"(got {type(value).__name__}).")
    unknown = [name for name in value if name not in known]
    if unknown:
        raise BadInput(f"{field}.{unknown[0]}" if field != "body" else unknown[0],
                       f"Unknown field {unknown[0]!r} in {field}: the fields are {', '.join(known)}.")
    return value


def parse_body(body: bytes) -> Any:
    """A request body as JSON, whatever its content type says (the playground sends text/plain)."""
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadInput("body", "The body is not UTF-8 text: send JSON.") from None
    except ValueError as error:
        raise BadInput("body", f"The body is not valid JSON ({error}): send an object such as "
                               '{"prompts": ["a red apple"], "n_images": 1}.') from None


@dataclasses.dataclass(frozen=True)
class JobInput:
    """A checked job body. `prompts` None: a variation's or extension's source image's own prompt."""

    prompts: tuple[str, ...] | None
    n_images: int
    seed: int | None
    settings: SamplingSettings
    negative_prompt: str | None
    vary: tuple[str, str, int] | None = None           # (run, file, keep_rows)
    extend: tuple[str, str, str, int] | None = None    # (run, file, direction, rows)


def _settings(body: dict) -> SamplingSettings:
    values = {"temperature": body.get("temperature"), "top_k": body.get("top_k"), "top_p": body.get("top_p"),
              "condition_scale": body.get("condition_scale", 10.0)}
    for name, value in values.items():
        if name == "top_k" and isinstance(value, float) and value == int(value):
            values[name] = value = int(value)
        try:
            SamplingSettings(**{name: value})
        except (ValueError, TypeError) as error:
            raise BadInput(name, str(error)) from None
    return SamplingSettings(**values)


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


def parse_job(body: Any, max_images: int, max_prompt_chars: int) -> JobInput:
    """POST /api/jobs's body → JobInput, or BadInput naming the first field that is wrong."""
    body = _object(body, "body", JOB_FIELDS)
    if "prompt" in body and "prompts" in body:
        raise BadInput("prompt", "Send either prompt (one text) or prompts (a list), not both.")
    prompts = None
    if "prompt" in body:
        prompts = (_text(body["prompt"], "prompt", max_prompt_chars),)
    elif "prompts" in body:
        given = body["prompts"]
        if not isinstance(given, list) or not given:
            raise BadInput("prompts", f"prompts must be a non-empty list of texts (got {given!r}).")
        prompts = tuple(_text(p, f"prompts[{i}]", max_prompt_chars) for i, p in enumerate(given))
    edits = [name for name in ("vary", "extend") if body.get(name) is not None]
    if len(edits) > 1:
        raise BadInput("extend", "Send vary or extend, not both.")
    if prompts is None and not edits:
        raise BadInput("prompts", 'prompts is missing: send {"prompts": ["a red apple"]} (or "prompt").')
    if edits and prompts is not None and len(prompts) > 1:
        raise BadInput("prompts", f"A {edits[0]} job draws with one prompt (got {len(prompts)}).")
    n_images = _whole(body.get("n_images", 1), "n_images", 1, max_images)
    total = n_images * (len(prompts) if prompts else 1)
    if total > max_images:
        raise BadInput("n_images", f"{len(prompts)} prompts × n_images {n_images} = {total} images; this "
                                   f"server makes at most {max_images} a job (--max-images): ask for fewer.")
    seed = body.get("seed")
    if seed is not None:
        seed = _whole(seed, "seed", 0, SEED_LIMIT - 1)
    negative = body.get("negative_prompt")
    if negative is not None:
        negative = _text(negative, "negative_prompt", max_prompt_chars, blank_ok=True)
    vary = extend = None
    if "vary" in edits:
        given = _object(body["vary"], "vary", ("image", "keep_rows"))
        vary = (*image_reference(given.get("image"), "vary.image"),
                _whole(given.get("keep_rows", 8), "vary.keep_rows", 0, GRID_ROWS))
    if "extend" in edits:
        given = _object(body["extend"], "extend", ("image", "direction", "rows"))
        direction = given.get("direction", "down")
        if direction not in DIRECTIONS:
            raise BadInput("extend.direction", f"extend.direction must be one of {', '.join(DIRECTIONS)} "
                                               f"(got {direction!r}).")
        extend = (*image_reference(given.get("image"), "extend.image"), direction,
                  _whole(given.get("rows", 8), "extend.rows", 1, GRID_ROWS - 1))
    return JobInput(prompts, n_images, seed, _settings(body), negative, vary, extend)


def parse_playground(body: Any, max_images: int, max_prompt_chars: int) -> tuple[str, int]:
    """dalle-playground's {"text": …, "num_images": …} → (prompt, number of images)."""
    if not isinstance(body, dict):
        raise BadInput("body", 'Send a JSON object: {"text": "a red apple", "num_images": 1}.')
    if "text" not in body:
        raise BadInput("text", 'text is missing: send {"text": "a red apple", "num_images": 1}.')
    return (_text(body["text"], "text", max_prompt_chars),
            _whole(body.get("num_images", 1), "num_images", 1, max_images))


# ---- files: only plain names, only what a manifest lists


def plain_name(name: Any) -> bool:
    """A file or folder name that stays where it is put: no separators, no `..`, not hidden."""
    return (isinstance(name, str) and 0 < len(name) <= 255 and not name.startswith(".")
            and not any(bad in name for bad in ("/", "\\", "\0", ":")))


def resolve_run(out: Path, name: Any, field: str = "run") -> RunFolder:
    """The run folder `name` directly in `out`, or BadInput (400 for a name that is not plain, 404 for
    no such run)."""
    if not plain_name(name):
        raise BadInput(field, f"{field} must be a run folder's plain name, as /api/runs lists them "
                              f"(got {name!r}).")
    path = out / name
    if not path.is_dir() or path.is_symlink() or path.resolve().parent != out.resolve():
        raise BadInput(field, f"{field}: there is no run {name!r} in the output folder.", 404)
    return RunFolder(path)


def resolve_image(out: Path, run: Any, file: Any, field: str = "file") -> Path:
    """A saved image's path: `file` must be listed in `run`'s manifest and be a file directly in it."""
    folder = resolve_run(out, run, "run" if field == "file" else field)
    if not plain_name(file):
        raise BadInput(field, f"{field} must be an image's plain file name (got {file!r}).")
    for entry in folder.entries():
        if entry.get("file") == file:
            try:
                path = folder.image_path(entry)
            except ValueError:
                break
            if path.is_file():
                return path
            break
    raise BadInput(field, f"{field}: run {run!r} has no image {file!r}.", 404)


def list_runs(out: Path, limit: int) -> list[dict]:
    """The newest `limit` run folders in `out`, newest first, with their saved images."""
    found = []
    for child in (out.iterdir() if out.is_dir() else ()):
        if plain_name(child.name) and child.is_dir() and not child.is_symlink():
            info = RunFolder(child).info()
            if info:
                found.append((str(info.get("created") or ""), child.name, info))
    found.sort(reverse=True)
    return [{"name": name, "created": created or None, "prompts": info.get("prompts", []),
             "images": saved_images(RunFolder(out / name))} for created, name, info in found[:limit]]


def build_request(job: JobInput, out: Path) -> GenerationRequest:
    """What to make (reading a variation's source image from the output folder)."""
    if job.vary is None and job.extend is None:
        return GenerationRequest(job.prompts, job.n_images, job.seed, job.settings,
                                 negative_prompt=job.negative_prompt or "")
    field = "vary.image" if job.vary else "extend.image"
    run, file = (job.vary or job.extend)[:2]
    def refuse_encoding(image: Any):       # the worker alone uses the device; saved images have tokens
        raise BadInput(field, f"{file} has no image tokens in its metadata: start from an image nbkit saved.")

    source = open_source(resolve_image(out, run, file, field), refuse_encoding)
    prompt = job.prompts[0] if job.prompts else None
    if prompt is None and source.prompt is None:
        raise BadInput("prompts", f"{file} has no prompt in its metadata: send one (prompts).")
    try:
        if job.vary:
            return variation_request(source, job.n_images, job.vary[2], job.seed, prompt, job.negative_prompt,
                                     job.settings)
        return extension_request(source, job.extend[2], job.extend[3], job.n_images, job.seed, prompt,
                                 job.negative_prompt, job.settings)
    except ValueError as error:
        raise BadInput(field.split(".")[0], str(error)) from None


# ---- the gate: token and CORS


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether a request may go on; if so, its route path and the `/t/<token>` prefix it came under."""

    status: int
    message: str = ""
    route: str = "/"
    prefix: str = ""


def split_token_path(path: str) -> tuple[str | None, str]:
    """'/t/<token>/rest' → ('<token>', '/rest'); any other path → (None, path)."""
    if not path.startswith("/t/"):
        return None, path
    token, _, rest = path[3:].partition("/")
    return token, "/" + rest


def authorize(path: str, authorization: str | None, token: str | None) -> Verdict:
    """With a token set, a request needs it in its path (/t/<token>/…) or as `Authorization: Bearer`."""
    given, route = split_token_path(path)
    if token is None:
        return Verdict(200, route=path)
    same = lambda text: secrets.compare_digest(text.encode(), token.encode())
    if given is not None:
        if same(given):
            return Verdict(200, route=route, prefix=f"/t/{given}")
        return Verdict(403, "Wrong token in the address: use the address the server printed (…/t/<token>/).")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and same(value.strip()):
            return Verdict(200, route=path)
        return Verdict(403, "Wrong token: send Authorization: Bearer <the token the server printed>.")
    return Verdict(401, "This server needs its token: open the address it printed (…/t/<token>/), or send "
                        "Authorization: Bearer <token>.")


def origin_allowed(origin: str | None, route: str, cors_origins: tuple[str, ...]) -> bool:
    """Cross-origin calls: origins given with --cors-origin (or `*`) may call every route; the
    dalle-playground page only its own routes. The server's own page is same-origin and needs nothing."""
    if not origin:
        return False
    if "*" in cors_origins or origin in cors_origins:
        return True
    return origin == PLAYGROUND_ORIGIN and route in PLAYGROUND_ROUTES


def preflight_headers(origin: str, requested_headers: str, private_network: bool) -> dict[str, str]:
    asked = [h.strip().lower() for h in requested_headers.split(",") if h.strip()]
    headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
               "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
               "Access-Control-Allow-Headers": ", ".join(h for h in asked if h in ALLOWED_HEADERS)
               or ", ".join(ALLOWED_HEADERS),
               "Access-Control-Max-Age": "600"}
    if private_network:      # Chrome asks before a public page may call a server on this machine
        headers["Access-Control-Allow-Private-Network"] = "true"
    return headers


def _wants_page(headers: Headers) -> bool:
    return "text/html" in headers.get("accept", "") and "bypass-tunnel-reminder" not in headers


class Gate:
    """ASGI middleware: answers CORS preflights, checks the token, moves /t/<token>/ routes into place,
    and adds CORS headers to answers for allowed origins."""

    def __init__(self, app: Any, token: str | None, cors_origins: tuple[str, ...]):
        self.app, self.token, self.cors_origins = app, token, cors_origins

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        route = split_token_path(scope["path"])[1] if self.token else scope["path"]
        allowed = origin_allowed(origin, route, self.cors_origins)
        if scope["method"] == "OPTIONS" and origin and "access-control-request-method" in headers:
            if allowed:
                response = Response(status_code=204, headers=preflight_headers(
                    origin, headers.get("access-control-request-headers", ""),
                    "access-control-request-private-network" in headers))
            else:
                response = _error(403, "origin", f"Calls from {origin} are not allowed: start the server "
                                                 f"with --cors-origin {origin} (or * for any).")
            await response(scope, receive, send)
            return
        cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Expose-Headers": "Retry-After"} if allowed else {}
        verdict = authorize(scope["path"], headers.get("authorization"), self.token)
        if verdict.status != 200:
            await _error(verdict.status, "token", verdict.message, cors)(scope, receive, send)
            return
        if verdict.prefix:
            if scope["path"] == verdict.prefix and _wants_page(headers):
                await RedirectResponse(verdict.prefix + "/", 307)(scope, receive, send)
                return
            path = verdict.prefix + verdict.route
            scope = {**scope, "path": path, "raw_path": path.encode(),
                     "root_path": scope.get("root_path", "") + verdict.prefix}

        async def send_with_cors(message: dict) -> None:
            if message["type"] == "http.response.start" and cors:
                MutableHeaders(scope=message).update(cors)
            await send(message)

        await self.app(scope, receive, send_with_cors)


# ---- answers


def _error(status: int, field: str | None, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status, headers=headers)


def image_url(prefix: str, image: dict) -> str:
    return f"{prefix}/api/images/{quote(image['run'])}/{quote(image['file'])}"


def presented(data: dict, prefix: str) -> dict:
    """An image or a job status as clients get it: each image with its URL (under /t/<token>/ when the
    request came that way, so that <img> tags, which send no headers, work)."""
    if "file" in data and "run" in data:
        return {**data, "url": image_url(prefix, data)}
    if "images" in data:
        return {**data, "images": [presented(image, prefix) for image in data["images"]]}
    return data


def _prefix(request: Request) -> str:
    return request.scope.get("root_path", "")


async def read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadInput("body", f"The body is {declared} bytes; this server takes at most {limit}.", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadInput("body", f"The body is over {limit} bytes, the most this server takes.", 413)
        chunks.append(chunk)
    return parse_body(b"".join(chunks))


def _job(request: Request) -> Job:
    job = request.app.state.queue.get(request.path_params["job_id"])
    if job is None:
        raise BadInput("id", f"There is no job {request.path_params['job_id']!r} (finished jobs are "
                             "forgotten after a while; their images stay in /api/runs).", 404)
    return job


async def wait_until_finished(queue: JobQueue, job: Job) -> dict:
    """The job's final status, once it has one."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future = loop.create_future()

    def listener(kind: str, data: dict) -> None:
        if kind in FINAL_STATES:
            loop.call_soon_threadsafe(lambda: ended.done() or ended.set_result(data))

    for kind, data in queue.listen(job, listener):
        if kind in FINAL_STATES:
            return data
    try:
        return await ended
    finally:
        queue.unlisten(job, listener)


async def page(request: Request) -> Response:
    index = STATIC / "index.html"
    if index.is_file():
        return FileResponse(index, media_type="text/html")
    return HTMLResponse("<!doctype html><title>nbkit</title><p>nbkit is serving; its page is not installed. "
                        "The API is at <a href='api/info'>api/info</a>.</p>")


async def info(request: Request) -> Response:
    state = request.app.state
    options, pipe = state.options, state.queue.pipe
    config = pipe.model.config
    return JSONResponse({
        "model": options.model, "vqgan": options.vqgan, "clip": options.clip, "version": __version__,
        "max_images": options.max_images, "max_queue": options.max_queue,
        "max_prompt_chars": options.max_prompt_chars, "max_batch": pipe.max_batch,
        "defaults": {"n_images": min(4, options.max_images), "temperature": config.temperature,
                     "top_k": config.top_k, "top_p": config.top_p, "condition_scale": 10.0},
        "queue": state.queue.info()})


async def submit_job(request: Request) -> Response:
    state = request.app.state
    body = await read_json(request, state.options.max_body_bytes)
    job_input = parse_job(body, state.options.max_images, state.options.max_prompt_chars)
    job = await run_in_threadpool(lambda: state.queue.submit(build_request(job_input, state.options.out)))
    return JSONResponse(presented(state.queue.status(job), _prefix(request)), 202)


async def job_status(request: Request) -> Response:
    job = _job(request)
    queue = request.app.state.queue
    status = queue.cancel(job) if request.method == "DELETE" else queue.status(job)
    return JSONResponse(presented(status, _prefix(request)))


async def cancel_job(request: Request) -> Response:
    return JSONResponse(presented(request.app.state.queue.cancel(_job(request)), _prefix(request)))


def sse(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def job_events(request: Request) -> Response:
    job, queue, prefix = _job(request), request.app.state.queue, _prefix(request)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    def listener(kind: str, data: dict) -> None:
        with contextlib.suppress(RuntimeError):      # the loop is closed: the server has stopped
            loop.call_soon_threadsafe(inbox.put_nowait, (kind, data))

    missed = queue.listen(job, listener)

    async def stream():
        try:
            for kind, data in missed:
                yield sse(kind, presented(data, prefix))
            if missed and missed[-1][0] in FINAL_STATES:
                return
            while True:
                try:
                    kind, data = await asyncio.wait_for(inbox.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield sse(kind, presented(data, prefix))
                if kind in FINAL_STATES:
                    return
        finally:
            queue.unlisten(job, listener)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def runs(request: Request) -> Response:
    limit = request.query_params.get("limit", "50")
    count = _whole(int(limit) if limit.isdigit() else limit, "limit", 1, 1000)
    found = await run_in_threadpool(list_runs, request.app.state.options.out, count)
    return JSONResponse({"runs": [presented(run, _prefix(request)) for run in found]})


async def image(request: Request) -> Response:
    out = request.app.state.options.out
    run, file = request.path_params["run"], request.path_params["file"]
    path = await run_in_threadpool(resolve_image, out, run, file)
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "max-age=86400"})


async def rerank(request: Request) -> Response:
    state = request.app.state
    body = _object(await read_json(request, state.options.max_body_bytes), "body", ("run",))
    if state.options.clip is None:
        raise BadInput("run", "Reranking is off on this server: start it with --clip clip-b32.", 409)
    folder = await run_in_threadpool(resolve_run, state.options.out, body.get("run"))
    try:
        ranking = await asyncio.wrap_future(
            state.queue.run_on_worker(lambda: rerank_folder(folder.path, state.reranker())))
    except BadInput:
        raise
    except ValueError as error:            # a run with no saved images
        raise BadInput("run", str(error)) from None
    prefix, run = _prefix(request), folder.path.name
    for group in ranking:
        group["images"] = [{**entry, "url": image_url(prefix, {"run": run, "file": entry["file"]})}
                           for entry in group["images"]]
    return JSONResponse({"run": folder.path.name, "ranking": ranking})


def saved_jpegs(out: Path, images: list[dict]) -> list[str]:
    jpegs = []
    for entry in images:
        with Image.open(resolve_image(out, entry["run"], entry["file"])) as picture:
            jpegs.append(jpeg_base64(picture.convert("RGB")))
    return jpegs


async def playground_generate(request: Request) -> Response:
    """dalle-playground's POST /generate (and the older /dalle): waits for the images and answers them
    as base64 JPEGs. They are saved like any job's, so a page that gives up loses nothing."""
    state = request.app.state
    text, count = parse_playground(await read_json(request, state.options.max_body_bytes),
                                   state.options.max_images, state.options.max_prompt_chars)
    job = await run_in_threadpool(state.queue.submit, GenerationRequest([text], count))
    final = await wait_until_finished(state.queue, job)
    if final["state"] != "done":
        return _error(500 if final["state"] == "failed" else 503, None,
                      final["error"] or f"The job was {final['state']}.")
    jpegs = await run_in_threadpool(saved_jpegs, state.options.out, final["images"])
    return JSONResponse({"generatedImgs": jpegs, "generatedImgsFormat": "jpeg"})


async def _bad_input(request: Request, error: BadInput) -> Response:
    return _error(error.status, error.field, error.message)


async def _queue_full(request: Request, error: QueueFull) -> Response:
    return _error(429, None, str(error), {"Retry-After": str(error.retry_after)})


async def _stopping(request: Request, error: Stopping) -> Response:
    return _error(503, None, str(error), {"Retry-After": "30"})


async def _http_error(request: Request, error: HTTPException) -> Response:
    messages = {404: f"No such address: {request.url.path} (the API is under /api/, see /api/info).",
                405: f"{request.method} is not allowed on {request.url.path}."}
    return _error(error.status_code, None, messages.get(error.status_code, str(error.detail)),
                  getattr(error, "headers", None))


async def _server_error(request: Request, error: Exception) -> Response:
    return _error(500, None, one_line(error))


def create_app(queue: JobQueue, options: ServerOptions, on_ready: Callable[[], None] | None = None) -> Any:
    """The ASGI app: routes behind the gate. `on_ready` is called once the app has started."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if on_ready is not None:
            on_ready()
        yield

    routes = [
        Route("/", page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC, check_dir=False)),
        Route("/api/info", info, methods=["GET"]),
        Route("/api/jobs", submit_job, methods=["POST"]),
        Route("/api/jobs/{job_id}", job_status, methods=["GET", "DELETE"]),
        Route("/api/jobs/{job_id}/events", job_events, methods=["GET"]),
        Route("/api/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/api/runs", runs, methods=["GET"]),
        Route("/api/images/{run}/{file}", image, methods=["GET"]),
        Route("/api/rerank", rerank, methods=["POST"]),
        Route("/dalle", playground_generate, methods=["POST"]),
        Route("/generate", playground_generate, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        BadInput: _bad_input, QueueFull: _queue_full, Stopping: _stopping, HTTPException: _http_error,
        Exception: _server_error})
    app.state.queue, app.state.options = queue, options
    app.state.reranker = _lazy_reranker(options)
    return Gate(app, options.token, options.cors_origins)


def _lazy_reranker(options: ServerOptions) -> Callable[[], Any]:
    """CLIP, loaded on the first rerank (on the worker thread, which runs every rerank)."""
    loaded: list = []

    def reranker():
        if not loaded:
            from nbkit.output.rerank import Reranker
            from nbkit.weights import hub

            try:
                loaded.append(Reranker.from_folder(hub.fetch(options.clip, options.cache, progress=False)))
            except Exception as error:
                raise BadInput("clip", f"Could not load the CLIP model {options.clip!r}: {one_line(error)}",
                               503) from None
        return loaded[0]

    return reranker


# ---- running it: uvicorn on a socket bound before the models load


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: any free port), so that a port in use fails at once, before
    the models load, and connections made as soon as the address is printed wait instead of failing."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        raise ValueError(f"--host {host} is not an address of this machine ({error.strerror}).") from None
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise OSError(f"Cannot listen on {host}:{port} ({error.strerror}): pick another --port, or 0 for "
                      "any free one.") from None
    sock.listen(128)
    return sock


def address(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"t/{token}/" if token else "")


class _Uvicorn(uvicorn.Server):
    """uvicorn that tells the job queue to stop as soon as it is asked to stop (Ctrl-C): the worker then
    finishes the batch in flight and ends the waiting jobs, so their event streams close."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]):
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            print("nbkit: stopping — finishing the batch in flight (Ctrl-C again to quit at once)",
                  file=sys.stderr, flush=True)
        self._on_exit()
        super().handle_exit(sig, frame)


class Running:
    """One server: the job queue's worker and uvicorn, on a socket already bound (see `bind`)."""

    def __init__(self, pipe: Pipeline, options: ServerOptions, sock: socket.socket,
                 on_ready: Callable[[], None] | None = None, log: Callable[[str], None] | None = None):
        self.options, self.sock = options, sock
        self.port = sock.getsockname()[1]
        self.url = address(options.host, self.port, options.token)
        self.queue = JobQueue(pipe, options.out, options.max_queue, options.preview_every, log)
        self.app = create_app(self.queue, options, on_ready)
        # log_config=None: uvicorn leaves the process's logging as it is (a notebook kernel's too);
        # its warnings and errors reach stderr through Python's last-resort handler.
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=5)
        self.server = _Uvicorn(config, on_exit=self.queue.stop)
        self._thread: threading.Thread | None = None

    def serve(self) -> None:
        """Serves until stopped (Ctrl-C in the main thread, or `stop`); the batch in flight is finished
        and saved before this returns."""
        self.queue.start()
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.queue.stop()
            self.queue.join()
            self.sock.close()

    def start(self, timeout: float = 60.0) -> Running:
        """Serves from a background thread (a notebook's kernel stays free); returns once it answers."""
        self._thread = threading.Thread(target=self.serve, name="nbkit-server", daemon=True)
        self._thread.start()
        waited = threading.Event()
        while not self.server.started and self._thread.is_alive() and timeout > 0:
            waited.wait(0.05)
            timeout -= 0.05
        if not self.server.started:
            raise RuntimeError("The server did not start (see the messages above).")
        return self

    def stop(self, timeout: float | None = 120.0) -> None:
        self.queue.stop()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
