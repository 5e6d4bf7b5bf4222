"""The prompt form (ipywidgets): prompts and settings, Generate and Stop, a progress bar and a gallery
that fills in as the images form, with Variations, Extend, Upscale and a seamless picture. This file is the
run: it reads the fields, builds a spec (`Generate`, `Vary`, `Extend`) and hands it to the one run driver
(`nbkit.output.runs.save_run`) with what to show of each event (`_view`); images are upscaled beside them by
`nbkit.output.pictures.upscale_saved`. The form's other parts, one concern a file: `form_fields` (reading
and checking the fields), `form_progress` (what the bar says), `form_layout` (the widgets),
`form_thread` (the worker thread), `form_gallery`, `form_upscale` and `form_plain` (the plain output
a saved notebook keeps).
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nbkit import places
from nbkit.generation.progress import describe, truncation_message
from nbkit.generation.sampling import SamplingSettings
from nbkit.notebook.form_fields import FormErrors, read_form
from nbkit.notebook.form_gallery import Gallery
from nbkit.notebook.form_layout import FormLayout
from nbkit.notebook.form_plain import PlainOutput
from nbkit.notebook.form_progress import event_label
from nbkit.notebook.form_thread import FormThread
from nbkit.notebook.form_upscale import Upscaling
from nbkit.notebook.html_views import png_of
from nbkit.notebook.local_models import names_the_loaded
from nbkit.notebook.translate_box import CHECK_MESSAGE


class GenerateForm(FormLayout, FormThread, Gallery, Upscaling, PlainOutput):
    """The prompt form: settings, Generate and Stop, a progress bar, and a gallery that fills in
    as the images form. Generation runs in a thread so that Stop can be clicked; Generate stays
    disabled until that thread has ended. Errors appear as a message in the form.

    `out`: a folder to save each run in (see `runs.save_run`); `load(name)`: makes a
    Pipeline for another model chosen in the form's Model field; `cache`: the model cache the notebook
    loads from (default `places.model_cache()`), whose model folders and upscaler files the fields list
    and where the upscaler is fetched; `translators(name, cache)`: loads a prompt translator (default
    `nbkit.text.translate.load_translator`; see `translate_box`). The gallery is widgets, which a saved
    notebook cannot show: `display(form)` also puts a plain output under the form that each run's end
    fills in, and `show_results()`, run in a later cell, shows them as plain output anywhere (`form_plain`).
    """

    def __init__(self, pipe: Any, out: str | Path | None = None, load: Callable[[str], Any] | None = None,
                 progress_every: int = 16, decode_every: int | None = None, upscaler: Any = "esrgan-x4",
                 translators: Callable[[str, Any], Any] | None = None, cache: str | Path | None = None):
        self.pipe, self.out, self.load = pipe, out, load
        self.cache = places.model_cache(cache)
        self._upscaler = upscaler           # a name, weights file or `Upscaler`: made and loaded on first use
        self.upscaled: dict[tuple[int, int], Path | np.ndarray] = {}   # (prompt, image) → its upscaled PNG
        self.progress_every = progress_every
        self.decode_every = decode_every or 64       # tokens between previews, when Previews is ticked
        self._build(pipe, load, upscaler, translators, self.cache)
        self.generate_button.on_click(self.generate)
        self.stop_button.on_click(self.stop)
        self.seamless_button.on_click(self.seamless)
        self.result, self.folder, self.error, self.seed_used, self.stopped = None, None, None, None, False
        self.already_complete = False
        self._init_gallery()
        self._edit: tuple | None = None     # ("vary" | "extend", source, (prompt, PNG)) of the next run
        self._made_what = "image(s)"                       # what the run makes, for its summary
        self._init_thread()
        self._plain_outputs: list = []          # display handles of the plain output under the form
        self._writer = None                     # the run's RunWriter, when it saves into `out`


    def generate(self, _button=None) -> None:
        """Starts a run (the Generate button); does nothing while one runs."""
        self._begin(None)

    def vary(self, pair: tuple[int, int]) -> None:
        """Starts a run of variations of the gallery's image `pair` (its "Vary" button): its first
        `keep_rows` rows kept, the form's count, seed, settings and negative prompt (blank: the image's
        own). The source stays first in the gallery, the variations beside it."""
        self._begin(("vary", self._sources[pair], self._finished[pair]))

    def extend(self, pair: tuple[int, int]) -> None:
        """Starts a run that continues the gallery's image `pair` (its "Extend" button) in the chosen
        direction, with the same settings as Vary; the source stays first in the gallery, and under it
        each result is shown joined to the image it continues."""
        self._begin(("extend", self._sources[pair], self._finished[pair]))

    # -- the run, in its thread

    def _run(self) -> None:
        from nbkit.generation.from_image import Extend, Vary
        from nbkit.generation.specs import Generate
        from nbkit.output import runs

        edit, self._edit = self._edit, None
        made, status = [], ""
        try:        # a wrong field keeps what is on show, and every wrong field is named at once
            values = read_form(self.prompts.value, self.n_images.value, self.seed.value,
                               self.temperature.value, self.top_k.value, self.top_p.value,
                               self.condition_scale.value)
        except FormErrors as error:
            self.error = error
            items = "".join(f"<li>{html.escape(message)}</li>" for message in error.messages)
            these = "these" if len(error.messages) > 1 else "this"
            self._finish(f"<span style='color:#b00020'><b>Fix {these} first</b> (nothing was changed):</span>"
                         f"<ul style='margin: 2px 0'>{items}</ul>", keep=True)
            return
        self._clear()
        if edit is not None:
            self._source_cell(edit)
        try:
            if not names_the_loaded(self.model.value.strip(), self.pipe.name):
                self.bar.layout.display = "flex"
                self.progress_label.value = describe("loading", 0, 0)
                self._say(f"Loading models: {html.escape(self.model.value.strip())}…")
                self.pipe = self.load(self.model.value.strip())
            negative = self.negative_prompt.value.strip()
            settings = SamplingSettings(**values.sampling)
            if edit is None:
                english = self.translate.english_to_draw(values.prompts, negative, self._say)
                if english is None:               # translated: shown to be checked, drawn next time
                    status = CHECK_MESSAGE
                    return
                spec, source = Generate(prompts=english[0], n_images=values.n_images, seed=values.seed,
                                        settings=settings, negative_prompt=english[1],
                                        translations=english[2]), None
                doing, self._made_what = "Generating", "image(s)"
            elif edit[0] == "vary":
                negative, typed = self.translate.negative_for_edit(negative)
                spec = Vary(keep_rows=self.keep_rows.value, n_images=values.n_images, seed=values.seed,
                            negative_prompt=negative or None, settings=settings, translation=typed)
                source = self._edit_source(edit[1])
                doing = f"Varying (first {self.keep_rows.value} of 16 rows kept)"
                self._made_what = f"variation(s), first {self.keep_rows.value} of 16 rows kept"
            else:
                direction, rows = self.extend_direction.value, self.extend_rows.value
                negative, typed = self.translate.negative_for_edit(negative)
                spec = Extend(direction=direction, rows=rows, n_images=values.n_images, seed=values.seed,
                              negative_prompt=negative or None, settings=settings, translation=typed)
                source = self._edit_source(edit[1])
                doing = f"Extending {direction} by {rows}"
                self._made_what = f"extension(s), {direction} by {rows}"
            run = runs.save_run(self.pipe, spec, self.out, source=source, view=self._view(made, doing),
                                progress_every=self.progress_every)
            self.result, request = run.generation, run.generation.request
            status = self._summary(request, run.generation.timings)
            if edit is not None and edit[0] == "extend" and made:
                self._show_joined(self.pipe.source(edit[1]), made, request.source)
        except Exception as error:  # shown to the user in the form, not as a traceback
            self.error = error
            self._hide_bar()
            kept = f" Kept {len(self._finished)} finished image(s)." if self._finished else ""
            status = (f"<span style='color:#b00020'><b>Error:</b> "
                      f"{html.escape(str(error) or type(error).__name__)}</span>{kept}")
        finally:
            self._finish(status)
            self._describe_previews()        # with the decode now measured

    def _edit_source(self, image: Any) -> Any:
        """What an edit starts from, with what was typed for its prompt (a gallery image's run knows it;
        a saved PNG records it)."""
        source = self.pipe.source(image)
        index = getattr(image, "prompt_index", None)
        if source.translation is None and index is not None and index < len(self._gallery_translations):
            source = dataclasses.replace(source, translation=self._gallery_translations[index])
        return source

    def _clear(self) -> None:
        """Nothing of the previous run stays on show: not its images, its bar or its result (called once the
        fields were read without an error)."""
        self.result, self.folder, self.error, self.seed_used, self.stopped = None, None, None, None, False
        self.already_complete, self._writer = False, None
        self._clear_gallery()
        self.upscaled_view.children, self.upscaled = (), {}
        self._hide_bar()
        self._show_plain("")
        self.notice.value = ""
        self._say("Starting…")
        self._reports = 0

    def _view(self, made: list, doing: str):
        """What the form shows of a run's events (`nbkit.generation.stream.View`): the gallery starts when
        the run opens (its seed drawn), fills in as batches end, and a Stop ends the run after the current
        step (not while a batch decodes: its images are nearly there)."""
        from nbkit.generation.stream import View

        def opened(event) -> None:
            request = event.request
            self.seed_used, self._request = request.seed, request
            self._start_gallery(request)
            self._say(f"{doing} with seed <b>{request.seed}</b>…")
            self.folder, self.already_complete = event.folder, event.already_complete
            self._writer = event.writer
            for entry in (event.folder.entries() if event.folder else ()):
                pair = (entry.get("prompt_index"), entry.get("image_index"))
                with contextlib.suppress(OSError, ValueError):
                    path = event.folder.image_path(entry)
                    self._fill(pair, entry.get("prompt", ""), path.read_bytes(), path)

        def progress(event) -> None:
            self.progress.max, self.progress.value = max(1, event.tokens_total), event.tokens_done
            self.progress_label.value = html.escape(event_label(event))
            if event.cut and not self.notice.value:
                self.notice.value = ("<div style='font: 12px/1.45 system-ui, sans-serif; color: #b36b00; "
                                     "white-space: normal; overflow-wrap: anywhere; margin: 2px 0'>"
                                     f"{html.escape(truncation_message(event.cut))}</div>")
            self._reports += 1
            due = self._reports % max(1, self.decode_every // self.progress_every) == 0
            if self.previews.value and event.position and event.stage == "drawing" and due:
                for image in event.images:          # partial: not kept as finished
                    if (image.prompt_index, image.image_index) in self._slots:
                        self._slots[image.prompt_index, image.image_index].value = png_of(image.pixels)

        def batch(event) -> None:
            made.extend(event.images)
            if self._writer is not None:
                self.folder = self._writer.folder         # made with the run's first image
            for image in event.images:
                self._fill((image.prompt_index, image.image_index), image.prompt, png_of(image.pixels), image)
            tokens_total = self.progress.max
            self.progress.value = round(tokens_total * event.images_done / max(1, event.images_total))
            self.progress_label.value = html.escape(event_label(event))

        def done(event) -> None:
            if not event.images_total:
                self.progress.max = self.progress.value = 1
            self.progress_label.value = html.escape(event_label(event))

        def stop(event) -> bool:
            if self._stopping.is_set() and event.kind != "done" and getattr(event, "stage", "") != "decoding":
                self.stopped = True
                self.progress_label.value = f"stopped · {len(made)} of {len(self._request.images)} images"
                return True
            return False

        return View(opened=opened, progress=progress, batch=batch, done=done, stop=stop)

    def _summary(self, request, timings: dict) -> str:
        where = f" Saved in {html.escape(str(self.folder.path))}." if self.folder else ""
        seed = f"seed <b>{request.seed}</b>"
        if self.already_complete:
            return (f"Already complete: this run's {len(self._finished)} image(s) ({seed}, same prompts and "
                    f"settings) were made before; nothing was made again.{where}")
        if self.stopped:
            return (f"Stopped: kept {len(self._finished)} of {len(request.images)} image(s), {seed}.{where}")
        return f"Done: {len(self._finished)} {self._made_what}, {seed}, {timings['total']:.1f} s.{where}"
