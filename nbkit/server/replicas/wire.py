"""What crosses from a remote replica to the front: the pipeline's events, made picklable.

`Progress` holds device arrays and a closure that decodes them lazily; the front of a remote replica
cannot call back into it, so the replica decodes the previews it sends (those its pacing left decodable,
previews.paced) and sends a `WirePreview`; the front turns it back into a `Progress` whose `images` are
those already decoded. `Batch` and `Done` are plain data and travel as they
are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from nbkit.generation.events import Event, GeneratedImage, Progress


@dataclasses.dataclass(frozen=True)
class WirePreview:
    """A `Progress` without its device arrays; `images`: its rows decoded so far, or None if none were."""

    tokens_done: int
    tokens_total: int
    images_done: int
    images_total: int
    elapsed: float
    compiling: bool
    position: int
    batch: range
    images: list[GeneratedImage] | None = None
    stage: str = "drawing"                 # the one progress vocabulary travels with it
    seconds_left: float | None = None
    decode_timed: bool = False
    cut: tuple[str, ...] = ()


def to_wire(events: Iterator[Event], previews: bool = True) -> Iterator[Event | WirePreview]:
    """The replica's side: each `Progress` becomes a `WirePreview`, with its rows decoded when it carries
    tokens (give it `paced` events: those a preview was not due for carry none)."""
    for event in events:
        if not isinstance(event, Progress):
            yield event
            continue
        images = event.images if previews and event.tokens is not None else None
        yield WirePreview(event.tokens_done, event.tokens_total, event.images_done, event.images_total,
                          event.elapsed, event.compiling, event.position, event.batch, images,
                          event.stage, event.seconds_left, event.decode_timed, tuple(event.cut))


def from_wire(event: Event | WirePreview) -> Event:
    """The front's side: a `WirePreview` back into a `Progress` (its `images` those decoded remotely)."""
    if not isinstance(event, WirePreview):
        return event
    images = event.images
    tokens = None if not images else np.stack([image.tokens for image in images])
    return Progress(event.tokens_done, event.tokens_total, event.images_done, event.images_total,
                    event.elapsed, event.compiling, event.position, tokens,
                    (lambda _tokens, images=images: images), batch=event.batch, stage=event.stage,
                    seconds_left=event.seconds_left, decode_timed=event.decode_timed, cut=event.cut)
