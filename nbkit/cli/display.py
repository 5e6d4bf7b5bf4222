"""How the command line shows a run: a bar whose label is the event's own (`Progress.label`: the stage,
n of N, the time left), lines for what was already saved and what was made, and one note for prompts
that were cut. `make` hands a spec to the one run driver (`nbkit.output.runs.save_run`) with this view."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from nbkit.cli.common import say

DECODE_SHARE = 1 / 8     # a bar's share of each image for its decode and save (after its 256 tokens)


class RunBar:
    """A bar that keeps a share of each image for its decode, so that it is not at 100 % while pixels are
    decoded; without a terminal (a log, a pipe) one line per stage of each batch instead."""

    def __init__(self, images: int, length: int):
        from tqdm.auto import tqdm

        self.length, self.extra = length, max(1, round(length * DECODE_SHARE))
        self.total, self.position = images * (length + self.extra), 0
        self.bar = tqdm(total=self.total, file=sys.stderr, disable=None,
                        bar_format="{desc} |{bar}| {percentage:3.0f}%")
        self.said: tuple | None = None
        self.cut_said = False

    def show(self, event, images_done: int, tokens_done: int, stage: str) -> None:
        label = event.label
        self.bar.set_description_str(label, refresh=True)
        position = tokens_done + images_done * self.extra
        self.bar.update(position - self.position)
        self.position = position
        key = (stage, images_done)
        if self.bar.disable and key != self.said:
            say(label)
        self.said = key

    def cut(self, prompts, limit: int | None) -> None:
        from nbkit.generation.progress import truncation_message

        if prompts and not self.cut_said:
            self.bar.write(f"note: {truncation_message(prompts, limit)}", file=sys.stderr)
            self.cut_said = True

    def close(self) -> None:
        self.bar.close()


class RunDisplay:
    """The command line's `View` of a run (`what`: its first words, e.g. "generating"). A complete run is
    said and stopped at once; a chain's pieces (one stream each) move one bar."""

    def __init__(self, pipe: Any, what: str):
        self.pipe, self.what = pipe, what
        self.length = pipe.model.config.image_length
        self.limit = getattr(pipe.tokenizer, "max_length", None)
        self.bar: RunBar | None = None
        self.before = 0              # images of earlier streams (an extension chain's pieces)
        self.complete = False

    def view(self):
        from nbkit.generation.stream import View

        return View(opened=self.opened, progress=self.progress, batch=self.batch, done=self.done,
                    stop=lambda event: self.complete)

    def opened(self, event) -> None:
        request = event.request
        if event.already_complete:
            say(f"already complete: all {event.already_saved} image(s) of this run (seed {request.seed}) "
                f"are in {event.folder.path}")
            self.complete = True
            return
        mesh = self.pipe.mesh
        devices = f"{mesh.devices.size} {mesh.devices.flat[0].platform} device(s)"
        resumed = f", {event.already_saved} already saved in {event.folder.path}" if event.folder else ""
        say(f"{self.what} {event.to_make} image(s){resumed} for {len(request.prompts)} prompt(s) with "
            f"{self.pipe.name} on {devices}, seed {request.seed}")
        self.bar = RunBar(event.to_make, self.length)

    def progress(self, event) -> None:
        self.bar.cut(event.cut, self.limit)
        self.bar.show(event, self.before + event.images_done, self.before * self.length + event.tokens_done,
                      event.stage)

    def batch(self, event) -> None:
        done = self.before + event.images_done
        self.bar.show(event, done, done * self.length, "saving")

    def done(self, event) -> None:
        self.before += event.images_total


def make(pipe: Any, job: Any, args: argparse.Namespace, what: str, source: Any = None):
    """Runs `job` (a spec) into its run folder under `--out` with a bar; returns the `SavedRun`."""
    from nbkit.output.runs import save_run
    from nbkit.places import output_root

    display = RunDisplay(pipe, what)
    with warnings.catch_warnings():      # cut prompts are said once, as a note (`RunBar.cut`)
        warnings.filterwarnings("ignore", message=r".* are longer than the model's .* were cut")
        run = save_run(pipe, job, output_root(args.out).resolve(), source=source, view=display.view(),
                       grid=getattr(args, "grid", False), progress_every=16)
    if display.bar is not None:
        display.bar.close()
        timings = run.generation.timings
        say(f"seed {run.generation.seed}; {len(run.generation.images)} new image(s) in "
            f"{timings.get('total', 0.0):.1f} s (tokens {timings.get('tokens', 0.0):.1f} s, pixels "
            f"{timings.get('pixels', 0.0):.1f} s)")
    return run
