"""POST /generate (and the older /dalle) for dalle-playground and for the official DALL·E mini app: the
call waits for the images and answers them as base64. They are saved like any job's, so a client that
gives up loses nothing."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nbkit import __version__
from nbkit.imagefile import read_rgb
from nbkit.server.folders import resolve_image
from nbkit.server.generate_input import parse_generate
from nbkit.server.protocol import error_response, jpeg_base64
from nbkit.server.routes.common import limits, read_body
from nbkit.server.routes.jobs import wait_until_finished


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
    state = request.app.state
    call = parse_generate(await read_body(request), limits(state), state.options.default_images)
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


ROUTES = [
    Route("/dalle", generate, methods=["POST"]),
    Route("/generate", generate, methods=["POST"]),
]
