"""The page itself, what the server says of itself (/api/info) and its figures (/metrics)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from nbkit import __version__
from nbkit.server.metrics import CONTENT_TYPE
from nbkit.weights.registry import TRANSLATOR_MODELS

STATIC = Path(__file__).parent.parent / "static"


async def page(request: Request) -> Response:
    index = STATIC / "index.html"
    if index.is_file():
        return FileResponse(index, media_type="text/html")
    return HTMLResponse("<!doctype html><title>nbkit</title><p>nbkit is serving; its page is not installed. "
                        "The API is at <a href='api/info'>api/info</a>.</p>")


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


ROUTES = [
    Route("/", page, methods=["GET"]),
    Mount("/static", StaticFiles(directory=STATIC, check_dir=False)),
    Route("/api/info", info, methods=["GET"]),
    Route("/metrics", metrics_text, methods=["GET"]),
]
