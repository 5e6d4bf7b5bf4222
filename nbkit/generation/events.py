"""What a stream yields and what collecting it gives, as plain data: `GeneratedImage`, the events
`Progress`, `Batch` and `Done` (the `Event` union), and `Generation`, a collected request.

Apart from `Pipeline` so that consumers (the run writer, the server's queue and replicas, the front ends)
read the events without importing the pipeline that makes them; nothing here imports it.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Any, ClassVar

import jax
import numpy as np

from nbkit.generation.kept import KeptTokens
from nbkit.generation.progress import describe
from nbkit.generation.request import GenerationRequest
from nbkit.generation.sampling import SamplingSettings


@dataclasses.dataclass(frozen=True)
class GeneratedImage:
    """One finished image: its task (prompt, indexes, seed), its tokens and pixels, and the shape it was
    drawn in, so that it can be drawn again exactly (`Pipeline.make_again`)."""

    prompt: str
    prompt_index: int
    image_index: int
    seed: int
    tokens: np.ndarray          # (256,) image codes: the image's identity
    pixels: np.ndarray          # (256, 256, 3) uint8
    negative_prompt: str = ""
    kept: KeptTokens | None = dataclasses.field(default=None, repr=False)
    # How likely the model found the kept tokens it reached after drawing some (the tokens after a
    # filled region): the sum of their log-probabilities under the mixed logits. 0 with none kept.
    kept_logprob: float = 0.0
    # The shape it was drawn in: the batch's rows (padding included) and its own row. Reproducing it in
    # that shape gives the same tokens in any dtype (`Pipeline.make_again`); None: not drawn here.
    batch_size: int | None = None
    batch_row: int | None = None
    dtype: str | None = None    # the compute dtype it was drawn in (half precision draws other tokens)
    weight_storage: str | None = None   # how the weights were kept (nbkit.weights.stored; float32: as is)


# ---- the events of a stream


@dataclasses.dataclass(frozen=True)
class Progress:
    """A batch is forming. `images` decodes its rows' tokens so far (zeros after `position`) when
    first read, so a consumer that only moves a progress bar pays for no decoding."""

    kind: ClassVar[str] = "progress"      # what `nbkit.generation.stream.show` dispatches on

    tokens_done: int            # image tokens drawn so far in this run, over all its images
    tokens_total: int
    images_done: int            # images finished (earlier batches)
    images_total: int
    elapsed: float              # seconds since the stream started
    compiling: bool             # this batch runs a program for the first time (it compiles first)
    position: int               # tokens drawn so far in each row of this batch
    tokens: jax.Array | None = dataclasses.field(default=None, repr=False)   # (batch, 256), own copy
    _decode: Any = dataclasses.field(default=None, repr=False, compare=False)
    batch: tuple[int, ...] = ()  # which of the stream's tasks this batch makes (their indexes)
    stage: str = "drawing"      # compiling, drawing or decoding (`nbkit.generation.progress.STAGES`)
    seconds_left: float | None = None   # learned from the run so far (None: nothing measured yet)
    decode_timed: bool = False  # whether seconds_left includes the decode (it does once one was timed)
    cut: tuple[str, ...] = ()   # the stream's prompts longer than the model reads (they were cut)

    @cached_property
    def images(self) -> list[GeneratedImage]:
        return [] if self.tokens is None else self._decode(self.tokens)

    @property
    def label(self) -> str:
        """The one progress label every front end shows (`nbkit.generation.progress.describe`)."""
        return describe(self.stage, self.images_done, self.images_total, self.tokens_done, self.tokens_total,
                        self.seconds_left, self.decode_timed)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Finished images, as soon as their batch ends."""

    kind: ClassVar[str] = "batch"

    images: list[GeneratedImage]
    images_done: int
    images_total: int
    elapsed: float
    batch: tuple[int, ...] = ()  # which of the stream's tasks these are (their indexes)
    stage: str = "saving"       # what the consumer does with them next

    @property
    def label(self) -> str:
        return describe("saving", self.images_done, self.images_total)


@dataclasses.dataclass(frozen=True)
class Done:
    """The stream's last event."""

    kind: ClassVar[str] = "done"

    images_total: int
    timings: dict[str, float]   # seconds: tokens, pixels, total


Event = Progress | Batch | Done


@dataclasses.dataclass
class Generation:
    """A collected stream: every image of a request, in order."""

    images: list[GeneratedImage]
    request: GenerationRequest
    model: str
    timings: dict[str, float]

    @property
    def seed(self) -> int:
        return self.request.seed

    @property
    def prompts(self) -> tuple[str, ...]:
        return self.request.prompts

    @property
    def settings(self) -> SamplingSettings:
        return self.request.settings

    def for_prompt(self, prompt_index: int) -> list[GeneratedImage]:
        return [image for image in self.images if image.prompt_index == prompt_index]
