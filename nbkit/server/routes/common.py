"""What every route handler shares: the request body read whole but bounded, the path prefix the page
is served under, the limits a job is checked against, and a job found by its id."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request

from nbkit.limits import BODY_TIMEOUT_S
from nbkit.server.protocol import BadInput, Limits, parse_body
from nbkit.server.queue.work import Job


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON: at most `limit` bytes (413), all of it within BODY_TIMEOUT_S (408)."""
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


async def read_body(request: Request) -> Any:
    """The body as JSON, within this server's --max-body-bytes."""
    return await read_json(request, request.app.state.options.max_body_bytes)


def prefix(request: Request) -> str:
    """The path the server is served under (a tunnel's or the token's), for the URLs in answers."""
    return request.scope.get("root_path", "")


def limits(state: Any) -> Limits:
    """The bounds a job is checked against (top_k's is the model's codebook: NoReplicaReady until a
    replica has said which model it runs)."""
    return Limits(state.options.max_images, state.options.max_prompt_chars,
                  state.queue.model().codebook_size)


def job_of(request: Request) -> Job:
    """The job named in the path, or a 404 that says finished jobs are forgotten after a while."""
    job = request.app.state.queue.get(request.path_params["job_id"])
    if job is None:
        raise BadInput("id", f"There is no job {request.path_params['job_id']!r} (finished jobs are "
                             "forgotten after a while; their images stay in /api/runs).", 404)
    return job
