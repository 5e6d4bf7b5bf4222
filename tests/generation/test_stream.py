"""The one dispatch over a stream's events and the collector of its result, on stand-in events."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from nbkit.generation.events import Batch, Done, Progress
from nbkit.generation.stream import Collected, View, collect, show


def test_each_kind_of_event_goes_to_its_callback_and_others_pass_unseen():
    seen = []
    view = View(progress=lambda event: seen.append(("progress", event.position)) or "shown",
                done=lambda event: seen.append(("done", event.images_total)))
    progress = Progress(0, 256, 0, 1, 0.0, False, 0)
    assert show(progress, view) == "shown" and show(Batch([], 1, 1, 0.0), view) is None
    show(Done(1, {"total": 1.0}), view)
    assert seen == [("progress", 0), ("done", 1)] and show(progress, None) is None

    @dataclasses.dataclass
    class Other:
        kind: ClassVar[str] = "other"

    with pytest.raises(TypeError, match="Not a stream event: Other"):
        show(Other(), view)


def test_collected_images_are_in_task_order_across_batches_and_streams():
    batches = [Batch(["c", "d"], 2, 4, 0.0, batch=(2, 3)), Batch(["a", "b"], 4, 4, 0.0, batch=(0, 1)),
               Done(4, {"tokens": 1.0, "total": 2.0}), Batch(["e"], 1, 1, 0.0, batch=(0,)),
               Done(1, {"tokens": 0.5, "total": 1.0})]
    collected = collect(batches)
    assert collected.images == ["a", "b", "c", "d", "e"]      # a second stream goes after the first
    assert collected.timings == {"tokens": 1.5, "total": 3.0}
    also, shown = Collected(), []
    for event in batches[:3]:
        show(event, also.view(batch=lambda event: shown.append(len(event.images))))
    assert also.images == ["a", "b", "c", "d"] and shown == [2, 2]
