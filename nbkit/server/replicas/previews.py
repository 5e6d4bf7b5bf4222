"""How often a batch's forming picture is decoded: the one preview throttle, applied by every replica.

A preview costs a VQGAN decode of the batch's rows. On an accelerator that is quick and every preview is
shown; on a CPU one decode can cost as much as 100 tokens, so fewer are. Each replica paces its own
events (`paced`): the in-process one as the front reads them, a remote one before they cross the wire,
so the front never throttles again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

from nbkit.generation.events import Event, Progress

PREVIEW_SHARE = 0.25             # after a batch's first preview, previews take at most this share of it


def preview_due(previews_so_far: int, decoding_s: float, batch_s: float,
                share: float = PREVIEW_SHARE) -> bool:
    """Whether to decode a preview now: a batch's first always (it shows the picture forming); later ones
    while decoding them has taken at most `share` of the batch's time."""
    return previews_so_far == 0 or decoding_s <= share * batch_s


def paced(events: Iterator[Event], share: float = PREVIEW_SHARE) -> Iterator[Event]:
    """The events with each `Progress` that carries tokens kept decodable only when a preview is due
    (`preview_due`); the others lose their tokens, so nobody decodes them. A kept one is still decoded
    only when read (`images`), and that decode is timed then: a preview nobody reads costs nothing."""
    spent = {"count": 0, "seconds": 0.0}
    began = time.perf_counter()
    for event in events:
        if isinstance(event, Progress):
            if event.position == 0:                       # a batch starts: its own count and clock
                spent, began = {"count": 0, "seconds": 0.0}, time.perf_counter()
            if event.tokens is not None:
                if preview_due(spent["count"], spent["seconds"], time.perf_counter() - began, share):
                    event = dataclasses.replace(event, _decode=_timed(event._decode, spent))
                else:
                    event = dataclasses.replace(event, tokens=None)
        yield event


def _timed(decode: Callable[..., Any], spent: dict) -> Callable[..., Any]:
    def timed(*args: Any) -> Any:
        began = time.perf_counter()
        try:
            return decode(*args)
        finally:
            spent["count"] += 1
            spent["seconds"] += time.perf_counter() - began
    return timed
