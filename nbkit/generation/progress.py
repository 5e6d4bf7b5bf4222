"""The one progress vocabulary of every front end (CLI, notebook form, code cells, server and page), and
the pace a run learns as it goes, for honest time-left estimates.

A run goes through these stages, in order, and every front end names them with the same words:

    loading     the models are read (before the pipeline exists: the front ends say it themselves)
    compiling   a batch size runs for the first time: its programs compile (minutes on some devices)
    drawing     image tokens are drawn: n of N tokens, and the time left, decoding included
    decoding    the drawn tokens become pixels (the VQGAN decode)
    saving      the finished images are written

`Pace` learns, from the run so far (and earlier runs of the same pipeline), how long a drawing step and a
decode take for each batch size; `seconds_left` is None while nothing has been measured (while the first
batch compiles), never a guess from other hardware. `describe` is the one label made from an event.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

STAGES = ("loading", "compiling", "drawing", "decoding", "saving")
STAGE_TEXT = {
    "loading": "loading models",
    "compiling": "compiling (first time for this size)",
    "drawing": "drawing",
    "decoding": "decoding pixels",
    "saving": "saving",
}


class Pace:
    """Seconds per drawing step and per decode, per batch size, measured. A size not measured yet is
    estimated from the nearest measured one, scaled by the number of rows when larger (an upper bound:
    a device runs rows in parallel up to its width)."""

    def __init__(self) -> None:
        self.step_seconds: dict[int, float] = {}       # batch size → seconds per token step (warm)
        self.decode_seconds: dict[int, float] = {}     # batch size → seconds to decode a batch
        self._decode_warm: set[int] = set()

    def learn_steps(self, size: int, steps: int, seconds: float) -> None:
        if steps > 0 and seconds > 0:
            per_step = seconds / steps
            known = self.step_seconds.get(size)
            self.step_seconds[size] = per_step if known is None else 0.5 * known + 0.5 * per_step

    def learn_decode(self, size: int, seconds: float, compiled: bool) -> None:
        """A decode's time; the first of a size includes its compilation and is replaced by a warm one."""
        if seconds <= 0:
            return
        if compiled and size in self._decode_warm:
            return
        if not compiled:
            self._decode_warm.add(size)
        self.decode_seconds[size] = seconds

    @staticmethod
    def _estimate(known: dict[int, float], size: int) -> float | None:
        if size in known:
            return known[size]
        if not known:
            return None
        nearest = min(known, key=lambda other: (abs(other - size), other))
        return known[nearest] * max(1.0, size / nearest)

    def seconds_left(self, steps: Sequence[tuple[int, int]],
                     decodes: Sequence[int]) -> tuple[float | None, bool]:
        """(seconds, whether the decode is in them) for `steps` ((batch size, steps left) per batch still to
        draw) and `decodes` (the batch sizes still to decode); None when no step was measured yet."""
        total = 0.0
        for size, count in steps:
            per_step = self._estimate(self.step_seconds, size)
            if per_step is None:
                return None, False
            total += per_step * count
        decode_known = True
        for size in decodes:
            seconds = self._estimate(self.decode_seconds, size)
            if seconds is None:
                decode_known = False
            else:
                total += seconds
        return total, decode_known


def duration(seconds: float) -> str:
    """A short time: '4 s', '2 min'."""
    return f"{math.ceil(seconds)} s" if seconds < 90 else f"{round(seconds / 60)} min"


def describe(stage: str, images_done: int, images_total: int, tokens_done: int = 0, tokens_total: int = 0,
             seconds_left: float | None = None, decode_timed: bool = True) -> str:
    """The one progress label: the stage, then what is done and the time left when it is known, e.g.
    'drawing · 1 of 4 images · 512 of 1024 tokens · about 9 s left (decoding included)'."""
    parts = [STAGE_TEXT.get(stage, stage)]
    if images_total:
        parts.append(f"{images_done} of {images_total} images")
    if stage in ("compiling", "drawing") and tokens_total:
        parts.append(f"{tokens_done} of {tokens_total} tokens")
    if seconds_left is not None and stage in ("drawing", "decoding"):
        tail = "decoding included" if decode_timed else "+ decoding, not yet timed"
        parts.append(f"about {duration(seconds_left)} left ({tail})")
    return " · ".join(parts)


def truncation_message(cut: Sequence[str], limit: int | None = None) -> str:
    """What the person who typed them is told about prompts longer than the model reads."""
    if not cut:
        return ""
    where = f" {limit} text tokens" if limit else " text length"
    shown = "; ".join(repr(text if len(text) <= 60 else text[:57] + "…") for text in cut[:3])
    more = f" and {len(cut) - 3} more" if len(cut) > 3 else ""
    return (f"{len(cut)} prompt(s) are longer than the model's{where} and were cut (only the beginning is "
            f"read): {shown}{more}. Shorten them to choose what is kept.")
