"""The models a server loads only when first asked for (CLIP for reranks, the upscaler for upscales):
never at start, never on the worker thread, kept once loaded; a load that fails is a 503 and is tried
again by the next request. Plain generation never holds their weights."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from nbkit.server.options import ServerOptions
from nbkit.server.protocol import BadInput
from nbkit.server.queue.events import one_line


def loaded_once(load: Callable[[], Any], field: str, what: str) -> Callable[[], Any]:
    """`load()`'s result, made by the first call that needs it and kept; a load that fails is a 503
    naming `field`, and the next call tries again."""
    loaded: list = []
    loading = threading.Lock()

    def get():
        with loading:
            if not loaded:
                try:
                    loaded.append(load())
                except Exception as error:
                    raise BadInput(field, f"Could not load {what}: {one_line(error)}", 503) from None
            return loaded[0]

    return get


def lazy_reranker(options: ServerOptions) -> Callable[[], Any]:
    """CLIP, loaded by the first rerank that needs it."""
    def load():
        from nbkit.output.rerank import Reranker
        from nbkit.weights import hub

        return Reranker.from_folder(hub.fetch(options.clip, options.cache, progress=False))

    return loaded_once(load, "clip", f"the CLIP model {options.clip!r}")


def lazy_upscaler(options: ServerOptions) -> Callable[[], Any]:
    """The upscaler (`--upscaler`), loaded by the first upscale that needs it."""
    def load():
        from nbkit.generation.upscale import Upscaler

        return Upscaler(options.upscaler, cache=options.cache, progress=False).load()

    return loaded_once(load, "upscaler", f"the upscaler {options.upscaler!r}")


def lazy_translators(options: ServerOptions) -> Callable[[str, Any], Any]:
    """name → its Translator, each loaded by the first job that asks for it (`translate`), then kept."""
    from nbkit.text.translate import load_translator

    kept: dict[str, Callable[[], Any]] = {}
    choosing = threading.Lock()

    def get(name: str, cache: Any = None) -> Any:
        with choosing:
            if name not in kept:
                kept[name] = loaded_once(lambda: load_translator(name, options.cache, progress=False),
                                         "translate", f"the translator {name!r}")
        return kept[name]()

    return get
