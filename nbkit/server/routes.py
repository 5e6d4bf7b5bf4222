"""The HTTP routes of `nbkit serve` (Starlette): each handler reads its input through protocol.py, hands
the work to the job queue (or reads the output folder through folders.py), and answers JSON shaped by
protocol.py. `create_app` puts them behind the gate.

Over 350 lines: every route is here; one router a group of routes (jobs, runs, translate, /generate)
is planned with the protocol split of issue 23.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from nbkit import __version__
from nbkit.imagefile import read_rgb
from nbkit.limits import BODY_TIMEOUT_S
from nbkit.output.pictures import rerank_folder
from nbkit.server.folders import for_clients, list_runs, resolve_image, resolve_run
from nbkit.server.gate import Gate, GateRules
from nbkit.server.generate_input import parse_generate
from nbkit.server.job_input import field_errors, parse_job, parse_translate
from nbkit.server.jobs import FINAL_STATES, Busy, Job, JobQueue, QueueFull, Stopping, one_line
from nbkit.server.lazy_models import lazy_reranker, lazy_translators, lazy_upscaler
from nbkit.server.metrics import CONTENT_TYPE, ServerMetrics
from nbkit.server.options import ServerOptions
from nbkit.server.protocol import (
    MAX_RUNS_LISTED,
    BadInput,
    Limits,
    as_json,
    error_response,
    image_url,
    jpeg_base64,
    known_fields,
    parse_body,
    query_count,
    sse,
)
from nbkit.server.replicas.base import NoReplicaReady
from nbkit.server.upscales import submit_upscale
from nbkit.weights.registry import TRANSLATOR_MODELS

STATIC = Path(__file__).parent / "static"
KEEPALIVE_S = 15.0               # an SSE comment this often keeps proxies and tunnels from closing a stream


async def read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BadInput("body", f"The body is {declared} bytes; this server takes at most {limit}.", 413)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BadInput("body", f"The body is over {limit} bytes, the most this server takes.",
                                   413)
                chunks.append(chunk)
    except TimeoutError:
        raise BadInput("body", f"The body did not arrive within {BODY_TIMEOUT_S:g} s: send it whole.",
                       408) from None
    return parse_body(b"".join(chunks))


def _prefix(request: Request) -> str:
    return request.scope.get("root_path", "")


def _job(request: Request) -> Job:
    job = request.app.state.queue.get(request.path_params["job_id"])
    if job is None:
        raise BadInput("id", f"There is no job {request.path_params['job_id']!r} (finished jobs are "
                             "forgotten after a while; their images stay in /api/runs).", 404)
    return job


async def wait_until_finished(queue: JobQueue, job: Job) -> Any:
    """The job's final status, once it has one."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future = loop.create_future()

    def listener(kind: str, payload: Any) -> None:
        if kind in FINAL_STATES:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(lambda: ended.done() or ended.set_result(payload))

    for kind, payload in queue.listen(job, listener):
        if kind in FINAL_STATES:
            return payload
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


def limits(state: Any) -> Limits:
    """The bounds a job is checked against (top_k's is the model's codebook: NoReplicaReady until a
    replica has said which model it runs)."""
    return Limits(state.options.max_images, state.options.max_prompt_chars,
                  state.queue.model().codebook_size)


async def info(request: Request) -> Response:
    state = request.app.state
    options, model = state.options, state.queue.pool.model
    defaults = None if model is None else {
        "n_images": options.default_images, "temperature": model.temperature, "top_k": model.top_k,
        "top_p": model.top_p, "condition_scale": 10.0}
    return JSONResponse({
        "model": options.model, "vqgan": options.vqgan, "clip": options.clip, "version": __version__,
        "upscaler": options.upscaler,
        "max_images": options.max_images, "max_queue": options.max_queue,
        "max_prompt_chars": options.max_prompt_chars, "max_batch": None if model is None else model.max_batch,
        "translators": list(TRANSLATOR_MODELS),
        "defaults": defaults, "queue": state.queue.info(), "replicas": state.queue.pool.info()})


async def metrics_text(request: Request) -> Response:
    """The server's figures in the Prometheus text format, for a scraper (behind the gate like /api/)."""
    state = request.app.state
    state.metrics.count_restarts({r.name: r.counts.restarts for r in state.queue.pool.replicas})
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE)


async def submit_job(request: Request) -> Response:
    state = request.app.state
    body = await read_json(request, state.options.max_body_bytes)
    try:
        job_input = parse_job(body, limits(state))
    except BadInput as first:       # every wrong field at once, the first one first
        first.others = [error for error in field_errors(body, limits(state)) if error.field != first.field]
        raise
    options = state.options
    made = await run_in_threadpool(job_input.request, options.out, options.cache, state.translators)
    job = await run_in_threadpool(lambda: state.queue.submit(made))
    answer = as_json(state.queue.status(job), _prefix(request))
    if job_input.translate != "off":     # the English drawn, and what was typed
        answer = {**answer, "english_prompts": list(made.prompts), "translations": list(made.translations)}
    return JSONResponse(answer, 202)


async def translate(request: Request) -> Response:
    """POST /api/translate: the English a job with `translate` would draw, without drawing, for a person
    to check (and edit) first; send it back as the job's english_prompts. Each translator is loaded by
    the first request that needs it, then kept; an English prompt loads none."""
    state = request.app.state
    options = state.options
    body = await read_json(request, options.max_body_bytes)
    asked = parse_translate(body, Limits(options.max_images, options.max_prompt_chars, 1))
    english = await run_in_threadpool(asked.translated, options.cache, state.translators)
    return JSONResponse({"translate": asked.translate, "prompts": list(asked.prompts),
                         "english_prompts": list(english.prompts),
                         "english_negative_prompt": english.negative_prompt[0],
                         "translations": list(english.translations)})


async def job_status(request: Request) -> Response:
    job = _job(request)
    queue = request.app.state.queue
    status = queue.cancel(job) if request.method == "DELETE" else queue.status(job)
    return JSONResponse(as_json(status, _prefix(request)))


async def cancel_job(request: Request) -> Response:
    return JSONResponse(as_json(request.app.state.queue.cancel(_job(request)), _prefix(request)))


async def job_events(request: Request) -> Response:
    job, queue, prefix = _job(request), request.app.state.queue, _prefix(request)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    def listener(kind: str, payload: Any) -> None:
        with contextlib.suppress(RuntimeError):      # the loop is closed: the server has stopped
            loop.call_soon_threadsafe(inbox.put_nowait, (kind, payload))

    missed = queue.listen(job, listener)

    async def stream():
        try:
            for kind, payload in missed:
                yield sse(kind, as_json(payload, prefix))
            if missed and missed[-1][0] in FINAL_STATES:
                return
            while True:
                try:
                    kind, payload = await asyncio.wait_for(inbox.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                data = await run_in_threadpool(as_json, payload, prefix)     # previews are JPEG-encoded
                yield sse(kind, data)
                if kind in FINAL_STATES:
                    return
        finally:
            queue.unlisten(job, listener)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def runs(request: Request) -> Response:
    count = query_count(request.query_params.get("limit", "50"), "limit", 1, MAX_RUNS_LISTED)
    found = await run_in_threadpool(list_runs, request.app.state.options.out, count)
    return JSONResponse({"runs": as_json(found, _prefix(request))})


async def image(request: Request) -> Response:
    out = request.app.state.options.out
    run, file = request.path_params["run"], request.path_params["file"]
    path = await run_in_threadpool(resolve_image, out, run, file)
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "max-age=86400"})


async def rerank(request: Request) -> Response:
    """Scores a run's images with CLIP. CLIP is loaded here, off the worker (which keeps making
    batches meanwhile); the scoring takes a place in the queue and runs on the worker between batches."""
    state = request.app.state
    body = known_fields(await read_json(request, state.options.max_body_bytes), "body", ("run",))
    if state.options.clip is None:
        raise BadInput("run", "Reranking is off on this server: start it with --clip clip-b32.", 409)
    folder = await run_in_threadpool(resolve_run, state.options.out, body.get("run"))
    reranker = await run_in_threadpool(state.reranker)
    run = folder.path.name
    try:
        ranking = await asyncio.wrap_future(
            state.queue.run_on_worker(lambda: rerank_folder(folder.path, reranker), run))
    except ValueError as error:            # a run with no saved images
        raise BadInput("run", str(error)) from None
    prefix = _prefix(request)
    for group in ranking:
        group["images"] = [{**entry, "url": image_url(prefix, run, entry["file"])}
                           for entry in group["images"]]
    return JSONResponse({"run": run, "ranking": ranking})


async def upscale(request: Request) -> Response:
    """Makes a saved image larger (see upscales.py): a job in the same queue as generation, answered
    like POST /api/jobs (202 and its status; follow it at /api/jobs/<id>/events)."""
    state = request.app.state
    job = await submit_upscale(state, await read_json(request, state.options.max_body_bytes))
    return JSONResponse(as_json(state.queue.status(job), _prefix(request)), 202)


def _saved_files(out: Path, images: Any, as_jpeg: bool) -> list[str]:
    """The saved images as base64: JPEG for the playground, the PNG file itself for the official app."""
    encoded = []
    for saved in images:
        path = resolve_image(out, saved.run, saved.file)
        if as_jpeg:
            encoded.append(jpeg_base64(np.asarray(read_rgb(path))))
        else:
            encoded.append(base64.b64encode(path.read_bytes()).decode("ascii"))
    return encoded


async def generate(request: Request) -> Response:
    """POST /generate (and the older /dalle) for dalle-playground and for the official DALL·E mini app:
    waits for the images and answers them as base64. They are saved like any job's, so a client that
    gives up loses nothing."""
    state = request.app.state
    call = parse_generate(await read_json(request, state.options.max_body_bytes), limits(state),
                          state.options.default_images)
    job = await run_in_threadpool(state.queue.submit, call.spec.request())
    final = await wait_until_finished(state.queue, job)
    if final.state != "done":
        return error_response(500 if final.state == "failed" else 503, None,
                              final.error or f"The job was {final.state}.")
    playground = call.client == "playground"
    encoded = await run_in_threadpool(_saved_files, state.options.out, final.images, playground)
    if playground:
        return JSONResponse({"generatedImgs": encoded, "generatedImgsFormat": "jpeg"})
    return JSONResponse({"images": encoded, "version": f"nbkit {__version__} ({state.options.model})"})


async def _bad_input(request: Request, error: BadInput) -> Response:
    shown = lambda message: for_clients(message, request.app.state.options.out, error.status >= 500)
    errors = [(one.field, shown(one.message)) for one in (error, *error.others)]
    return error_response(error.status, error.field, shown(error.message), errors=errors)


async def _queue_full(request: Request, error: QueueFull) -> Response:
    request.app.state.metrics.queue_full()
    return error_response(429, None, str(error), {"Retry-After": str(error.retry_after)})


async def _none_ready(request: Request, error: NoReplicaReady) -> Response:
    return error_response(503, None, str(error), {"Retry-After": "30"})


async def _stopping(request: Request, error: Stopping) -> Response:
    return error_response(503, None, str(error), {"Retry-After": "30"})


async def _busy(request: Request, error: Busy) -> Response:
    return error_response(409, "run", str(error))


async def _http_error(request: Request, error: HTTPException) -> Response:
    messages = {404: f"No such address: {request.url.path} (the API is under /api/, see /api/info).",
                405: f"{request.method} is not allowed on {request.url.path}."}
    return error_response(error.status_code, None, messages.get(error.status_code, str(error.detail)),
                          getattr(error, "headers", None))


async def _server_error(request: Request, error: Exception) -> Response:
    message = one_line(error)
    shown = for_clients(message, request.app.state.options.out)
    if shown != message:
        print(f"nbkit: {request.method} {request.url.path}: {message}", file=sys.stderr, flush=True)
    return error_response(500, None, shown)


def create_app(queue: JobQueue, options: ServerOptions, port: int,
               on_ready: Callable[[], None] | None = None, metrics: ServerMetrics | None = None) -> Any:
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
        Route("/metrics", metrics_text, methods=["GET"]),
        Route("/api/jobs", submit_job, methods=["POST"]),
        Route("/api/jobs/{job_id}", job_status, methods=["GET", "DELETE"]),
        Route("/api/jobs/{job_id}/events", job_events, methods=["GET"]),
        Route("/api/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/api/runs", runs, methods=["GET"]),
        Route("/api/images/{run}/{file}", image, methods=["GET"]),
        Route("/api/rerank", rerank, methods=["POST"]),
        Route("/api/upscale", upscale, methods=["POST"]),
        Route("/api/translate", translate, methods=["POST"]),
        Route("/dalle", generate, methods=["POST"]),
        Route("/generate", generate, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        BadInput: _bad_input, QueueFull: _queue_full, Stopping: _stopping, Busy: _busy,
        NoReplicaReady: _none_ready,
        HTTPException: _http_error, Exception: _server_error})
    app.state.queue, app.state.options = queue, options
    app.state.metrics = metrics or queue.metrics or ServerMetrics()
    app.state.reranker = lazy_reranker(options)
    app.state.upscaler = lazy_upscaler(options)
    app.state.translators = lazy_translators(options)
    return Gate(app, GateRules(options.token, options.cors_origins, options.allow_hosts, port))


