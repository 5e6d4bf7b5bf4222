"""The ASGI app of `nbkit serve`: the routers (routes/) together, each error type answered once as JSON
(protocol.error_response), the lazily loaded models in the app's state, and all of it behind the gate."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from nbkit.server.folders import for_clients
from nbkit.server.gate import Gate, GateRules
from nbkit.server.lazy_models import lazy_reranker, lazy_translators, lazy_upscaler
from nbkit.server.metrics import ServerMetrics
from nbkit.server.options import ServerOptions
from nbkit.server.protocol import BadInput, error_response
from nbkit.server.queue.admission import JobQueue
from nbkit.server.queue.events import Busy, QueueFull, Stopping, one_line
from nbkit.server.replicas.base import NoReplicaReady
from nbkit.server.routes import clients, jobs, runs, site, translation, upscale_jobs

ROUTERS = (site, jobs, runs, upscale_jobs, translation, clients)


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

    routes = [route for router in ROUTERS for route in router.ROUTES]
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
