"""The output folder over HTTP: the newest runs (/api/runs), a saved image (/api/images), and a run's
images scored by CLIP (/api/rerank), each by plain name through folders.py."""

from __future__ import annotations

import asyncio

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from nbkit.output.pictures import rerank_folder
from nbkit.server.folders import list_runs, resolve_image, resolve_run
from nbkit.server.protocol import MAX_RUNS_LISTED, BadInput, as_json, image_url, known_fields, query_count
from nbkit.server.routes.common import prefix, read_body


async def runs(request: Request) -> Response:
    count = query_count(request.query_params.get("limit", "50"), "limit", 1, MAX_RUNS_LISTED)
    found = await run_in_threadpool(list_runs, request.app.state.options.out, count)
    return JSONResponse({"runs": as_json(found, prefix(request))})


async def image(request: Request) -> Response:
    out = request.app.state.options.out
    run, file = request.path_params["run"], request.path_params["file"]
    path = await run_in_threadpool(resolve_image, out, run, file)
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "max-age=86400"})


async def rerank(request: Request) -> Response:
    """Scores a run's images with CLIP. CLIP is loaded here, off the worker (which keeps making
    batches meanwhile); the scoring is queued work (a RerankJob) that a worker runs before any waiting
    batch."""
    state = request.app.state
    body = known_fields(await read_body(request), "body", ("run",))
    if state.options.clip is None:
        raise BadInput("run", "Reranking is off on this server: start it with --clip clip-b32.", 409)
    folder = await run_in_threadpool(resolve_run, state.options.out, body.get("run"))
    reranker = await run_in_threadpool(state.reranker)
    run = folder.path.name
    try:
        ranking = await asyncio.wrap_future(
            state.queue.submit_rerank(run, lambda: rerank_folder(folder.path, reranker)))
    except ValueError as error:            # a run with no saved images
        raise BadInput("run", str(error)) from None
    path = prefix(request)
    for group in ranking:
        group["images"] = [{**entry, "url": image_url(path, run, entry["file"])}
                           for entry in group["images"]]
    return JSONResponse({"run": run, "ranking": ranking})


ROUTES = [
    Route("/api/runs", runs, methods=["GET"]),
    Route("/api/images/{run}/{file}", image, methods=["GET"]),
    Route("/api/rerank", rerank, methods=["POST"]),
]
