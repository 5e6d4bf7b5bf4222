"""What a front end does with a stream's events, written once: `show` hands each event to the `View`'s
callback for its kind, and `Collected` gathers a stream's finished images in the order of its tasks.

A stream (`Pipeline.stream`, and the run driver `nbkit.output.runs.save_run`) yields events of four kinds,
each naming its kind (`event.kind`): "opened" (a run folder opened: what is saved, what is left), "progress"
(a batch is forming), "batch" (finished images) and "done" (the timings). A front end says what to show
for each (the CLI's bar, the notebook form's gallery, a cell's progress line); nothing else tells events
apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

KINDS = ("opened", "progress", "batch", "done")


@dataclasses.dataclass(frozen=True)
class View:
    """What a front end shows of a stream: one callback a kind of event, each optional (unset: the event
    passes unseen). `stop(event)`, asked after each event by the run driver: True ends the run there (its
    finished images stay saved)."""

    opened: Callable[[Any], Any] | None = None
    progress: Callable[[Any], Any] | None = None
    batch: Callable[[Any], Any] | None = None
    done: Callable[[Any], Any] | None = None
    stop: Callable[[Any], bool] | None = None


def show(event: Any, view: View | None) -> Any:
    """The one dispatch over a stream's events: `view`'s callback for the event's kind, and what it
    returns (None when the view shows no such event)."""
    if event.kind not in KINDS:
        raise TypeError(f"Not a stream event: {type(event).__name__}.")
    callback = None if view is None else getattr(view, event.kind)
    return None if callback is None else callback(event)


class Collected:
    """A stream's result, gathered as it goes: its finished images in the order of its tasks (`Batch.batch`
    says which tasks a batch made; a batch that names none is placed after those before it; streams one
    after another, in turn: an extension chain's pieces) and the timings of its `Done`. Use it as a
    `View`'s `batch` and `done`, or `collect` a whole stream."""

    def __init__(self) -> None:
        self._placed: dict[int, Any] = {}
        self._base = 0                   # where the current stream's tasks go (after earlier streams')
        self.timings: dict[str, float] = {}

    def batch(self, event: Any) -> None:
        indexes = event.batch or range(len(self._placed) - self._base, len(self._placed) - self._base
                                       + len(event.images))
        self._placed.update((self._base + index, image) for index, image in zip(indexes, event.images,
                                                                                strict=True))

    def done(self, event: Any) -> None:
        """A stream's end: its timings (added to earlier streams'); a stream after it is placed after."""
        for name, seconds in event.timings.items():
            self.timings[name] = self.timings.get(name, 0.0) + seconds
        self._base = max(self._placed, default=-1) + 1

    @property
    def images(self) -> list:
        return [self._placed[index] for index in sorted(self._placed)]

    def view(self, **others: Callable | None) -> View:
        """A View that collects, and calls `others`' callbacks too (batch and done after collecting)."""
        def both(mine: Callable, theirs: Callable | None) -> Callable:
            return mine if theirs is None else lambda event: (mine(event), theirs(event))[1]
        return View(opened=others.get("opened"), progress=others.get("progress"),
                    batch=both(self.batch, others.get("batch")), done=both(self.done, others.get("done")),
                    stop=others.get("stop"))


def collect(events: Iterable[Any], view: View | None = None) -> Collected:
    """A whole stream gathered (every event also shown on `view`, when given)."""
    collected = Collected()
    seen = collected.view(**({} if view is None else {kind: getattr(view, kind) for kind in KINDS}))
    for event in events:
        show(event, seen)
    return collected
