"""/api/jobs: a job submitted (checked through protocol.py, built into a request, queued), its status,
its cancel, and its events as a server-sent stream (previews, images, its end)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from nbkit.server.job_input import field_errors, parse_job
from nbkit.server.protocol import BadInput, as_json, sse
from nbkit.server.queue.admission import JobQueue
from nbkit.server.queue.events import FINAL_STATES
from nbkit.server.queue.work import Job
from nbkit.server.routes.common import job_of, limits, prefix, read_body

KEEPALIVE_S = 15.0               # an SSE comment this often keeps proxies and tunnels from closing a stream


async def submit_job(request: Request) -> Response:
    state = request.app.state
    body = await read_body(request)
    try:
        job_input = parse_job(body, limits(state))
    except BadInput as first:       # every wrong field at once, the first one first
        first.others = [error for error in field_errors(body, limits(state)) if error.field != first.field]
        raise
    options = state.options
    made = await run_in_threadpool(job_input.request, options.out, options.cache, state.translators)
    job = await run_in_threadpool(lambda: state.queue.submit(made))
    answer = as_json(state.queue.status(job), prefix(request))
    if job_input.translate != "off":     # the English drawn, and what was typed
        answer = {**answer, "english_prompts": list(made.prompts), "translations": list(made.translations)}
    return JSONResponse(answer, 202)


async def job_status(request: Request) -> Response:
    job = job_of(request)
    queue = request.app.state.queue
    status = queue.cancel(job) if request.method == "DELETE" else queue.status(job)
    return JSONResponse(as_json(status, prefix(request)))


async def cancel_job(request: Request) -> Response:
    return JSONResponse(as_json(request.app.state.queue.cancel(job_of(request)), prefix(request)))


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


async def job_events(request: Request) -> Response:
    job, queue, path = job_of(request), request.app.state.queue, prefix(request)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    def listener(kind: str, payload: Any) -> None:
        with contextlib.suppress(RuntimeError):      # the loop is closed: the server has stopped
            loop.call_soon_threadsafe(inbox.put_nowait, (kind, payload))

    missed = queue.listen(job, listener)

    async def stream():
        try:
            for kind, payload in missed:
                yield sse(kind, as_json(payload, path))
            if missed and missed[-1][0] in FINAL_STATES:
                return
            while True:
                try:
                    kind, payload = await asyncio.wait_for(inbox.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                data = await run_in_threadpool(as_json, payload, path)     # previews are JPEG-encoded
                yield sse(kind, data)
                if kind in FINAL_STATES:
                    return
        finally:
            queue.unlisten(job, listener)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


ROUTES = [
    Route("/api/jobs", submit_job, methods=["POST"]),
    Route("/api/jobs/{job_id}", job_status, methods=["GET", "DELETE"]),
    Route("/api/jobs/{job_id}/events", job_events, methods=["GET"]),
    Route("/api/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
]
