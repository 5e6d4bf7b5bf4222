"""POST /api/translate: the English a job with `translate` would draw, without drawing."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nbkit.server.job_input import parse_translate
from nbkit.server.protocol import Limits
from nbkit.server.routes.common import read_body


async def translate(request: Request) -> Response:
    """The English a job with `translate` would draw, for a person to check (and edit) first; send it
    back as the job's english_prompts. Each translator is loaded by the first request that needs it, then
    kept; an English prompt loads none."""
    state = request.app.state
    options = state.options
    asked = parse_translate(await read_body(request), Limits(options.max_images, options.max_prompt_chars, 1))
    english = await run_in_threadpool(asked.translated, options.cache, state.translators)
    return JSONResponse({"translate": asked.translate, "prompts": list(asked.prompts),
                         "english_prompts": list(english.prompts),
                         "english_negative_prompt": english.negative_prompt[0],
                         "translations": list(english.translations)})


ROUTES = [Route("/api/translate", translate, methods=["POST"])]
