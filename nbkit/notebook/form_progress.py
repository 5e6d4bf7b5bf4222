"""What the prompt form's bar and notes say, in the one progress vocabulary of every front end
(`nbkit.generation.progress`): a stream event's label, and what a preview costs. Text only: no widgets."""

from __future__ import annotations

import html
from typing import Any


def event_label(event: Any) -> str | None:
    """What the progress bar's label says for a stream's event, in the one vocabulary
    (`nbkit.generation.progress`): the Progress event's own label, then saving and done."""
    from nbkit.generation.stream import View, show

    def done(event: Any) -> str:
        if not event.images_total:
            return "nothing left to make"
        return f"done · {event.images_total} images · {event.timings['total']:.1f} s"

    return show(event, View(progress=lambda event: event.label, batch=lambda event: event.label, done=done))


def preview_cost(pipe: Any) -> str:
    """What a preview costs here: one VQGAN decode of the batch, measured when a run has timed one."""
    seconds = [value for value in getattr(getattr(pipe, "pace", None), "decode_seconds", {}).values()]
    measured = f"about {min(seconds):.1f} s each, measured" if seconds else "one decode each (not yet timed)"
    return f"each preview costs a VQGAN decode of the batch: {measured}"


def on_cpu(pipe: Any) -> bool:
    return pipe.mesh.devices.flat[0].platform == "cpu"


def previews_note(pipe: Any, ticked: bool) -> str:
    """The note beside the Previews box: what ticking it costs (always said on a CPU, where it is off at
    first), '' when there is nothing to say."""
    where = "on this CPU " if on_cpu(pipe) else ""
    if not (ticked or on_cpu(pipe)):
        return ""
    return (f'<span style="opacity: .7; display: inline-block; line-height: 1.45">{where}'
            f"{html.escape(preview_cost(pipe))}</span>")
