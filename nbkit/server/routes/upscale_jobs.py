"""POST /api/upscale: a saved image made larger by the server's upscaler (`--upscaler`), as a job in the
same queue as generation (an UpscaleJob), so it is counted (429), ordered, followed (SSE) and cancelled
like one, and answered like POST /api/jobs (202 and its status).

The request is checked here, off the worker: the run and file (listed in the manifest as an image that
was made, not an upscaled copy), the file read as a picture, and the upscaler loaded (downloaded, read,
placed) on the first upscale, in a thread of its own, so that neither a download nor a bad file ever
holds up the worker; plain generation never loads it. On the worker the job runs `pictures.upscale_saved`,
the run writer's path every front end shares: the upscaled PNG beside its source, listed in the manifest.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nbkit.output.pictures import upscale_saved
from nbkit.output.storage import RunFolder
from nbkit.server.folders import SavedImage, resolve_image, saved_image
from nbkit.server.job_input import parse_upscale
from nbkit.server.protocol import BadInput, as_json
from nbkit.server.routes.common import prefix, read_body


def _checked_source(out, run: str, file: str, max_pixels: int) -> RunFolder:
    """The run folder of an image that may be upscaled, or BadInput naming the field: its size is checked
    against the upscaler's own limit from the header, before anything is decoded or queued."""
    from nbkit.generation.upscale import UpscaleError
    from nbkit.output.upscaled import read_picture

    path = resolve_image(out, run, file, upscaled=False)
    try:
        read_picture(path, max_pixels)
    except UpscaleError as error:
        raise BadInput("file", str(error)) from None
    return RunFolder(path.parent)


async def upscale(request: Request) -> Response:
    """Checks the body, loads the upscaler (first time only), checks the picture against its limits and
    queues the upscale (JobQueue.submit_upscale)."""
    state = request.app.state
    given = parse_upscale(await read_body(request))
    if state.options.upscaler is None:
        raise BadInput("file", "Upscaling is off on this server: start it with --upscaler esrgan-x4.", 409)
    out, run, file = state.options.out, given.source.run, given.source.file
    await run_in_threadpool(resolve_image, out, run, file, "file", False)   # 404 first
    upscaler = await run_in_threadpool(state.upscaler)
    folder = await run_in_threadpool(_checked_source, out, run, file, upscaler.settings.max_pixels)

    def work(progress: Callable[[int, int], None]) -> SavedImage:
        path = upscale_saved(folder, upscaler, [file], progress)[0]
        entry = next(e for e in folder.entries(upscaled=True) if e.get("file") == path.name)
        return saved_image(folder, entry)

    job = await run_in_threadpool(state.queue.submit_upscale, folder, file, work)
    return JSONResponse(as_json(state.queue.status(job), prefix(request)), 202)


ROUTES = [Route("/api/upscale", upscale, methods=["POST"])]
