"""The prompt form (ipywidgets): prompts and settings, Generate and Stop, a progress bar and a gallery
that fills in as the images form, with Variations, Extend, Upscale and a seamless picture. It only reads
fields and shows events: requests come from `GenerationRequest` and the edit builders (`Vary`, `Extend`),
runs are saved (and images upscaled beside them) by `nbkit.output.runs` (its `RunWriter` and
`upscale_saved`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import io
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nbkit.generation.request import parse_seed
from nbkit.generation.sampling import SamplingSettings
from nbkit.notebook import colab
from nbkit.notebook.translate_box import CHECK_MESSAGE, TranslateBox
from nbkit.notebook.views import CAPTION_STYLE, caption_html, images_html, placeholder_png, png_of, show_html
from nbkit.notebook.widgets import set_tooltip, widget_bundle
from nbkit.weights import registry


@dataclasses.dataclass(frozen=True)
class FormValues:
    """What the form asks for, checked: the arguments of a `GenerationRequest`."""
    prompts: list[str]
    n_images: int
    seed: int | None
    sampling: dict


def read_form(prompts: str, n_images: int, seed: str, temperature: float, top_k: int, top_p: float,
              condition_scale: float) -> FormValues:
    """The form's raw values → arguments, or a ValueError that says what to fix."""
    lines = [line.strip() for line in prompts.splitlines() if line.strip()]
    if not lines:
        raise ValueError("Type at least one prompt (one per line).")
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ValueError(f"Images per prompt must be a whole number ≥ 1 (got {n_images!r}).")
    seed = parse_seed(seed)
    sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p,
                "condition_scale": condition_scale}
    SamplingSettings(**sampling)             # raises a ValueError naming the bad setting
    return FormValues(lines, int(n_images), seed, sampling)


class _Stopped(Exception):
    """Stop was clicked during an upscale."""


class TimeLeft:
    """Estimates the seconds left from the pace since compiling last ended: a compilation's minutes
    say nothing about the pace of sampling."""

    def __init__(self):
        self._since: tuple[float, int] | None = None      # (elapsed, tokens done) when the pace began

    def update(self, elapsed: float, tokens_done: int, tokens_total: int, compiling: bool) -> float | None:
        if compiling or self._since is None:
            self._since = None if compiling else (elapsed, tokens_done)
            return None
        seconds, tokens = elapsed - self._since[0], tokens_done - self._since[1]
        return (tokens_total - tokens_done) * seconds / tokens if tokens > 0 and seconds > 0 else None


def _duration(seconds: float) -> str:
    return f"{math.ceil(seconds)} s" if seconds < 90 else f"{round(seconds / 60)} min"


def progress_text(images_done: int, images_total: int, tokens_done: int, tokens_total: int,
                  seconds_left: float | None, compiling: bool = False) -> str:
    """What the progress bar's label says: compiling, or images done, percent and time left."""
    if compiling:
        return "compiling (first run only)…"
    percent = math.floor(100 * tokens_done / tokens_total) if tokens_total else 100
    known = seconds_left is not None and tokens_done < tokens_total
    left = f" · about {_duration(seconds_left)} left" if known else ""
    return f"{images_done} / {images_total} images · {percent}%{left}"


class GenerateForm:
    """The prompt form: settings, Generate and Stop, a progress bar, and a gallery that fills in
    as the images form. Generation runs in a thread so that Stop can be clicked; Generate stays
    disabled until that thread has ended. Errors appear as a message in the form.

    `out`: a folder to save each run in (see `runs.stream_to_folder`); `load(name)`: makes a
    Pipeline for another model chosen in the form's Model field; `translators(name, cache)`: loads a
    prompt translator (default `nbkit.text.translate.load_translator`; see `translate_box`). The
    gallery is widgets, which a saved notebook cannot show: `display(form)` also puts a plain output
    under the form that each run's end fills in (where the frontend applies display updates from a
    thread, as JupyterLab does), and `show_results()`, run in a later cell, shows them as plain output
    anywhere.
    """

    def __init__(self, pipe: Any, out: str | Path | None = None, load: Callable[[str], Any] | None = None,
                 progress_every: int = 16, decode_every: int | None = None, upscaler: Any = "esrgan-x4",
                 translators: Callable[[str, Any], Any] | None = None):
        import ipywidgets as w

        self.pipe, self.out, self.load = pipe, out, load
        self._upscaler = upscaler           # a name, weights file or `Upscaler`: made and loaded on first use
        self.upscaled: dict[tuple[int, int], Path | np.ndarray] = {}   # (prompt, image) → its upscaled PNG
        self.progress_every = progress_every
        on_cpu = pipe.mesh.devices.flat[0].platform == "cpu"
        self.decode_every = decode_every or (256 if on_cpu else 64)     # partial images cost a VQGAN decode
        style = {"description_width": "initial"}
        field = lambda: w.Layout(width="auto", min_width="150px")
        # Unbounded number fields: a bounded one silently clamps (top-k 0 → 1); read_form says what is wrong.
        self.prompts = w.Textarea(placeholder="one prompt per line", description="Prompts",
                                  layout=w.Layout(width="100%", height="5em"), style=style)
        self.n_images = w.IntText(value=4, description="Images per prompt", style=style, layout=field())
        self.seed = w.Text(value="", placeholder="blank = random", description="Seed", style=style,
                           layout=field())
        self.temperature = w.FloatText(value=1.0, step=0.05, description="Temperature", style=style,
                                       layout=field())
        self.top_k = w.IntText(value=50, description="Top-k", style=style, layout=field())
        self.top_p = w.FloatText(value=1.0, step=0.05, description="Top-p", style=style, layout=field())
        self.condition_scale = w.FloatText(value=10.0, step=0.5, description="Condition scale", style=style,
                                           layout=field())
        self.negative_prompt = w.Text(value="", placeholder="what the images should not show (optional)",
                                      description="Negative prompt", style=style,
                                      layout=w.Layout(width="100%"))
        self.keep_rows = w.IntSlider(value=8, min=0, max=16, description="Variations keep rows", style=style,
                                     layout=w.Layout(width="auto", min_width="260px"))
        set_tooltip(self.keep_rows, "rows of 16 kept from the top of the image you vary")
        self.extend_direction = w.Dropdown(options=["down", "right"], value="right", description="Extend",
                                           style=style, layout=w.Layout(width="auto"))
        self.extend_rows = w.IntSlider(value=8, min=1, max=15, description="by rows/columns", style=style,
                                       layout=w.Layout(width="auto", min_width="240px"))
        names = list(registry.DALLEBART_MODELS)
        self.model = w.Dropdown(options=names + ([pipe.name] if pipe.name not in names else []),
                                value=pipe.name, description="Model", style=style, disabled=load is None,
                                layout=field())
        self.translate = TranslateBox(translators)      # the Translate choice and the English to draw
        self._gallery_translations: tuple = ()          # what was typed, per prompt of the gallery's run
        self.generate_button = w.Button(description="Generate", button_style="primary", icon="play")
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True)
        self.seamless_button = w.Button(description="Seamless picture", icon="th-large", disabled=True,
                                        tooltip="each prompt's images decoded together as one picture")
        self.seamless_view = w.VBox()
        self.upscaled_view = w.VBox()            # the upscaled images, under the gallery
        self.progress = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(flex="1 1 auto", width="auto"))
        self.progress_label = w.HTML(layout=w.Layout(flex="0 1 auto"))
        self.status = w.HTML()
        self.gallery = w.GridBox(layout=w.Layout(
            grid_template_columns="repeat(auto-fill, minmax(min(150px, calc(50% - 4px)), 1fr))",
            grid_gap="8px"))                            # at least two a row, also on a phone
        self.generate_button.on_click(self.generate)
        self.stop_button.on_click(self.stop)
        settings = w.HBox([self.n_images, self.seed, self.model], layout=w.Layout(flex_flow="row wrap"))
        sampling = w.HBox([self.temperature, self.top_k, self.top_p, self.condition_scale],
                          layout=w.Layout(flex_flow="row wrap"))
        self.seamless_button.on_click(self.seamless)
        buttons = w.HBox([self.generate_button, self.stop_button, self.seamless_button],
                         layout=w.Layout(flex_flow="row wrap", align_items="center"))
        edits = w.HBox([self.keep_rows, self.extend_direction, self.extend_rows],
                       layout=w.Layout(flex_flow="row wrap", align_items="center"))
        self.bar = w.HBox([self.progress, self.progress_label],      # hidden until a run has a bar to show
                          layout=w.Layout(display="none", align_items="center", flex_flow="row wrap"))
        self.widget = w.VBox([self.prompts, self.negative_prompt, self.translate.widget, settings, sampling,
                              edits, buttons,
                              self.bar, self.status, self.gallery, self.seamless_view, self.upscaled_view])
        self.result, self.folder, self.error, self.seed_used, self.stopped = None, None, None, None, False
        self.already_complete = False
        self._slots: dict[tuple[int, int], Any] = {}      # (prompt, image) → its Image widget
        self._cells: dict[tuple[int, int], Any] = {}      # → its gallery cell (image and caption)
        self._finished: dict[tuple[int, int], tuple[str, bytes]] = {}     # → (prompt, PNG) once finished
        self._sources: dict[tuple[int, int], Any] = {}     # → what "Variations" starts from (image or PNG)
        self._edit: tuple[str, Any] | None = None          # ("vary" | "extend", source) of the next run
        self._made_what = "image(s)"                       # what the run makes, for its summary
        self._lock, self._stopping = threading.RLock(), threading.Event()    # R: widget observers call back
        self._thread, self._active = None, False
        self.keep_click_open = colab.widget_updates_need_an_open_request()     # see _begin
        self._ended = threading.Event()     # set by the run's last action (an interrupted join breaks)
        self._plain_outputs: list = []          # display handles of the plain output under the form
        self._writer = None                     # the run's RunWriter, when it saves into `out`

    @property
    def running(self) -> bool:
        """True from Generate until the run's thread has done its last action."""
        return self._active

    def generate(self, _button=None) -> None:
        """Starts a run (the Generate button); does nothing while one runs."""
        self._begin(None)

    def vary(self, pair: tuple[int, int]) -> None:
        """Starts a run of variations of the gallery's image `pair` (its "Variations" button): its first
        `keep_rows` rows kept, the form's count, seed, settings and negative prompt."""
        self._begin(("vary", self._sources[pair]))

    def extend(self, pair: tuple[int, int]) -> None:
        """Starts a run that continues the gallery's image `pair` (its "Extend" button) in the chosen
        direction; under the gallery, each result is shown joined to the image it continues."""
        self._begin(("extend", self._sources[pair]))

    def upscale(self, pair: tuple[int, int]) -> None:
        """Makes the gallery's image `pair` larger (its "Upscale" button), on the form's thread: the
        upscaler is loaded by the first upscale; the result is shown under the gallery and saved beside
        the image (and listed with its run) when the run was saved. Stop ends it between windows."""
        self._begin(None, lambda: self._run_upscale(pair))

    def _begin(self, edit: tuple[str, Any] | None, target: Callable[[], None] | None = None) -> None:
        with self._lock:
            if self._active:
                return
            self._edit = edit
            if self._thread is not None:
                self._thread.join()         # it has done its last action: it ends at once
            self._active = True
            self.generate_button.disabled, self.stop_button.disabled = True, False
            self._stopping.clear()
            self._ended.clear()
            self._thread = threading.Thread(target=target or self._run, daemon=True)
            self._thread.start()
        if self.keep_click_open:       # Colab: the run's widget updates reach the page only while the click
            self._wait_interruptibly()  # that started it is being handled (colab.py says why)

    def _wait_interruptibly(self) -> None:
        """Waits for the run's thread; an interrupt (Colab's stop button, as the form's Stop click waits
        behind this one) stops the run after its current step, keeping what is finished, as Stop does."""
        while True:
            try:
                self._ended.wait()
                return
            except KeyboardInterrupt:
                self.stop()

    def stop(self, _button=None) -> None:
        """Ends the run after the current step; finished images are kept (and saved). Idle: does nothing."""
        with self._lock:
            if not self._active or self._stopping.is_set():
                return
            self._stopping.set()
            self._say("Stopping after the current step…")

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the run, in its thread

    def _run(self) -> None:
        from nbkit.generation.from_image import Extend, Vary
        from nbkit.generation.pipeline import Generation, GenerationRequest

        edit, self._edit = self._edit, None
        self._clear()
        made, timings, status = [], {}, ""
        try:
            values = read_form(self.prompts.value, self.n_images.value, self.seed.value,
                               self.temperature.value, self.top_k.value, self.top_p.value,
                               self.condition_scale.value)
            if self.model.value != self.pipe.name:
                self._say(f"Loading {html.escape(self.model.value)}…")
                self.pipe = self.load(self.model.value)
            negative = self.negative_prompt.value.strip()
            settings = SamplingSettings(**values.sampling)
            if edit is None:
                english = self.translate.english_to_draw(values.prompts, negative, self._say)
                if english is None:               # translated: shown to be checked, drawn next time
                    status = CHECK_MESSAGE
                    return
                request = GenerationRequest(english[0], values.n_images, values.seed, settings,
                                            negative_prompt=english[1], translations=english[2])
                doing, self._made_what = "Generating", "image(s)"
            elif edit[0] == "vary":
                negative, typed = self.translate.negative_for_edit(negative)
                request = Vary(keep_rows=self.keep_rows.value, n_images=values.n_images, seed=values.seed,
                               negative_prompt=negative or None, settings=settings, translation=typed
                               ).request(self._edit_source(edit[1]))
                doing = f"Varying (first {self.keep_rows.value} of 16 rows kept)"
                self._made_what = f"variation(s), first {self.keep_rows.value} of 16 rows kept"
            else:
                direction, rows = self.extend_direction.value, self.extend_rows.value
                negative, typed = self.translate.negative_for_edit(negative)
                request = Extend(direction=direction, rows=rows, n_images=values.n_images, seed=values.seed,
                                 negative_prompt=negative or None, settings=settings, translation=typed
                                 ).request(self._edit_source(edit[1]))
                doing = f"Extending {direction} by {rows}"
                self._made_what = f"extension(s), {direction} by {rows}"
            self.seed_used = request.seed
            self._start_gallery(request)
            self._say(f"{doing} with seed <b>{request.seed}</b>…")
            with contextlib.closing(self._events(request)) as events:
                for event in events:
                    timings = self._show(event, made) or timings
                    if self._stopping.is_set() and not timings and getattr(event, "stage", "") != "decoding":
                        self.stopped = True
                        self.progress_label.value = f"{len(made)} / {len(request.images)} images · stopped"
                        break
            self.result = Generation(made, request, self.pipe.name, timings)
            status = self._summary(request, timings)
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

    def _edit_source(self, image: Any) -> Any:
        """What an edit starts from, with what was typed for its prompt (a gallery image's run knows it;
        a saved PNG records it)."""
        source = self.pipe.source(image)
        index = getattr(image, "prompt_index", None)
        if source.translation is None and index is not None and index < len(self._gallery_translations):
            source = dataclasses.replace(source, translation=self._gallery_translations[index])
        return source

    def _run_upscale(self, pair: tuple[int, int]) -> None:
        import ipywidgets as w
        from PIL import Image

        from nbkit.generation.upscale import Upscaler

        status, number = "", pair[1] + 1
        try:
            if not isinstance(self._upscaler, Upscaler):
                self._upscaler = Upscaler(self._upscaler)
            upscaler = self._upscaler
            if not upscaler.loaded:
                self._say(f"Loading the upscaler {html.escape(upscaler.model_name)} (first upscale only)…")
                upscaler.load()
            self._say(f"Upscaling image {number} ×{upscaler.scale} with {html.escape(upscaler.model_name)}…")
            self.bar.layout.display = "flex"
            self.progress.value, self.progress_label.value = 0, "upscaling…"

            def progress(done: int, total: int) -> None:
                if self._stopping.is_set():
                    raise _Stopped()
                self.progress.max, self.progress.value = max(1, total), done
                self.progress_label.value = f"{done} / {total} tiles"

            saved = self._saved_file(pair)
            if saved is not None:
                from nbkit.output.runs import upscale_saved

                path = upscale_saved(self.folder, upscaler, [saved], progress)[0]
                pixels, where = np.asarray(Image.open(path)), f"Saved as {html.escape(str(path))}."
                self.upscaled[pair] = path
            else:
                with Image.open(io.BytesIO(self._finished[pair][1])) as image:
                    source = np.asarray(image.convert("RGB"))
                pixels = upscaler.upscale([source], progress)[0]
                where = "Not saved: this form has no output folder."
                self.upscaled[pair] = pixels
            caption = caption_html(number, f"{self._finished[pair][0]} (upscaled ×{upscaler.scale}, "
                                           f"{pixels.shape[1]}×{pixels.shape[0]})")
            view = w.VBox([w.Image(value=png_of(pixels), format="png",
                                   layout=w.Layout(max_width="100%", width=f"{pixels.shape[1]}px")),
                           w.HTML(caption)])
            self.upscaled_view.children = (*self.upscaled_view.children, view)
            status = f"Upscaled image {number} to {pixels.shape[1]}×{pixels.shape[0]}. {where}"
        except _Stopped:
            status = f"Stopped upscaling image {number}: nothing was saved."
        except Exception as error:  # shown to the user in the form, not as a traceback
            self.error = error
            status = (f"<span style='color:#b00020'><b>Error:</b> "
                      f"{html.escape(str(error) or type(error).__name__)}</span>")
        finally:
            self._hide_bar()
            self._finish(status)

    def _saved_file(self, pair: tuple[int, int]) -> str | None:
        """The file name the run's folder keeps the gallery's image `pair` under, or None (not saved)."""
        if self.folder is None:
            return None
        for entry in self.folder.entries():
            if (entry.get("prompt_index"), entry.get("image_index")) == pair:
                return entry.get("file")
        return None

    def _events(self, request):
        from nbkit.output import runs

        if self.out is not None:
            return runs.stream_to_folder(self.pipe, request, self.out, progress_every=self.progress_every)
        return self.pipe.stream(request, self.progress_every)

    def _clear(self) -> None:
        """Nothing of the previous run stays on show: not its images, its bar or its result."""
        self.result, self.folder, self.error, self.seed_used, self.stopped = None, None, None, None, False
        self.already_complete, self._writer = False, None
        self._slots, self._cells, self._finished, self._sources = {}, {}, {}, {}
        self.gallery.children = ()
        self.seamless_view.children = ()
        self.upscaled_view.children, self.upscaled = (), {}
        self.seamless_button.disabled = True
        self._hide_bar()
        self._show_plain("")
        self._say("Starting…")
        self._time_left, self._reports = TimeLeft(), 0

    def _say(self, message: str) -> None:
        """The status line (HTML); wrapped lines get the spacing of text, not of a row of widgets."""
        self.status.value = f'<div style="line-height: 1.45; margin: 4px 0">{message}</div>'

    def _hide_bar(self) -> None:
        self.progress.value, self.progress.max, self.progress_label.value = 0, 1, ""
        self.bar.layout.display = "none"

    def _start_gallery(self, request) -> None:
        import ipywidgets as w

        self.bar.layout.display = "flex"
        self._gallery_translations = tuple(request.translations)
        self._slots = {pair: w.Image(value=placeholder_png(), format="png", layout=w.Layout(width="100%"))
                       for pair in request.images}
        self._cells = {pair: w.VBox([image, w.HTML(caption_html(pair[1] + 1, request.prompts[pair[0]]))],
                                    layout=w.Layout(min_width="0"))
                       for pair, image in self._slots.items()}
        self.gallery.children = tuple(self._cells.values())

    def _fill(self, pair: tuple[int, int], prompt: str, png: bytes, source: Any) -> None:
        import ipywidgets as w

        self._finished[pair], self._sources[pair] = (prompt, png), source
        if pair in self._slots:
            self._slots[pair].value = png
            vary = w.Button(description="Variations", icon="clone", layout=w.Layout(width="auto"),
                            tooltip="new images keeping the first rows of this one (the slider: how many)")
            vary.on_click(lambda _button, pair=pair: self.vary(pair))
            extend = w.Button(description="Extend", icon="arrows-alt", layout=w.Layout(width="auto"),
                              tooltip="continue this image down or to the right (the settings above)")
            extend.on_click(lambda _button, pair=pair: self.extend(pair))
            upscale = w.Button(description="Upscale", icon="expand", layout=w.Layout(width="auto"),
                               tooltip="this image 4× larger, shown below and saved beside it")
            upscale.on_click(lambda _button, pair=pair: self.upscale(pair))
            cell = self._cells[pair]
            actions = w.HBox([vary, extend, upscale], layout=w.Layout(flex_flow="row wrap"))
            cell.children = (*cell.children[:2], actions)

    def _show(self, event, made: list) -> dict | None:
        """Shows one event of the stream; returns the timings when it is the last."""
        from nbkit.generation.pipeline import Batch, Done, Progress
        from nbkit.output.runs import Opened

        if isinstance(event, Opened):
            self.folder, self.already_complete = event.folder, event.already_complete
            self._writer = event.writer
            for entry in (event.folder.entries() if event.folder else ()):
                pair = (entry.get("prompt_index"), entry.get("image_index"))
                with contextlib.suppress(OSError, ValueError):
                    path = event.folder.image_path(entry)
                    self._fill(pair, entry.get("prompt", ""), path.read_bytes(), path)
        elif isinstance(event, Progress):
            self.progress.max, self.progress.value = max(1, event.tokens_total), event.tokens_done
            done, total = event.tokens_done, event.tokens_total
            left = self._time_left.update(event.elapsed, done, total, event.compiling)
            self.progress_label.value = progress_text(event.images_done, event.images_total, done, total,
                                                      left, event.compiling)
            self._reports += 1
            if event.position and self._reports % max(1, self.decode_every // self.progress_every) == 0:
                for image in event.images:          # partial: not kept as finished
                    if (image.prompt_index, image.image_index) in self._slots:
                        self._slots[image.prompt_index, image.image_index].value = png_of(image.pixels)
        elif isinstance(event, Batch):
            made += event.images
            if self._writer is not None:
                self.folder = self._writer.folder         # made with the run's first image
            for image in event.images:
                self._fill((image.prompt_index, image.image_index), image.prompt, png_of(image.pixels), image)
            tokens_total = self.progress.max
            tokens_done = round(tokens_total * event.images_done / max(1, event.images_total))
            self.progress.value = tokens_done
            left = self._time_left.update(event.elapsed, tokens_done, tokens_total, False)
            self.progress_label.value = progress_text(event.images_done, event.images_total, tokens_done,
                                                      tokens_total, left)
        elif isinstance(event, Done):
            if event.images_total:
                self.progress_label.value = (progress_text(event.images_total, event.images_total, 1, 1, None)
                                             + f" · {event.timings['total']:.1f} s")
            else:
                self.progress.max = self.progress.value = 1
                self.progress_label.value = "nothing left to make"
            return event.timings
        return None

    def _summary(self, request, timings: dict) -> str:
        where = f" Saved in {html.escape(str(self.folder.path))}." if self.folder else ""
        seed = f"seed <b>{request.seed}</b>"
        if self.already_complete:
            return (f"Already complete: this run's {len(self._finished)} image(s) ({seed}, same prompts and "
                    f"settings) were made before; nothing was made again.{where}")
        if self.stopped:
            return (f"Stopped: kept {len(self._finished)} of {len(request.images)} image(s), {seed}.{where}")
        return f"Done: {len(self._finished)} {self._made_what}, {seed}, {timings['total']:.1f} s.{where}"

    def _finish(self, status: str) -> None:
        """The thread's last action: drop the slots that got no finished image, say how the run ended
        (after any Stop's message), then free the buttons."""
        with self._lock:
            self._active = False            # first: a Stop from here on finds nothing to stop
            self._say(status)
            if self._slots:
                kept = [cell for pair, cell in self._cells.items() if pair in self._finished]
                self.gallery.children = tuple(kept)
            self._show_plain(self._results_summary() if self._finished else "")
            self.generate_button.disabled, self.stop_button.disabled = False, True
            self.seamless_button.disabled = len(self._finished) < 2
            self._ended.set()

    def _show_joined(self, source, images: list, edit: dict) -> None:
        """Each extension joined to the image it continues, decoded as one picture, under the gallery."""
        import ipywidgets as w

        from nbkit.generation.kept import stitched_tokens

        views = []
        for image in images:
            joined = self.pipe.decode_grid(stitched_tokens(source.tokens, [image.tokens], edit["direction"],
                                                           edit["rows"]))
            caption = caption_html(image.image_index + 1, f"{image.prompt} (joined to the source)")
            views.append(w.VBox([w.Image(value=png_of(joined), format="png", layout=w.Layout(
                max_width="100%", width=f"{joined.shape[1]}px")), w.HTML(caption)]))
        self.seamless_view.children = tuple(views)

    def seamless(self, _button=None) -> list[np.ndarray]:
        """The Seamless picture button: each prompt's finished images laid out in the most square full grid
        (`seamless_columns`) and decoded as one picture, shown under the gallery and saved in the
        run's folder. Returns the pictures."""
        import ipywidgets as w
        from PIL import Image

        from nbkit.generation.kept import seamless_columns, seamless_tokens
        from nbkit.png import read_png_metadata

        if self.running or len(self._finished) < 2:
            return []
        pictures, views = [], []
        for prompt_index in sorted({p for p, _ in self._finished}):
            pairs = sorted(pair for pair in self._finished if pair[0] == prompt_index)
            columns = seamless_columns(len(pairs))
            if self.folder is not None:     # decoded once, saved, and shown from the saved PNG
                from nbkit.output import runs
                saved = runs.save_seamless(self.pipe, self.folder, prompt_index, columns)
                picture = np.asarray(Image.open(saved).convert("RGB"))
            else:
                tokens = [np.asarray(read_png_metadata(source)["tokens"]) if isinstance(source, Path)
                          else source.tokens for source in (self._sources[pair] for pair in pairs)]
                picture = self.pipe.decode_grid(seamless_tokens(tokens, columns))
            pictures.append(picture)
            caption = caption_html(None, f"{self._finished[pairs[0]][0]} (seamless, {len(pairs)} images)")
            views.append(w.VBox([w.Image(value=png_of(picture), format="png",
                                         layout=w.Layout(max_width="100%", width=f"{picture.shape[1]}px")),
                                 w.HTML(caption)]))
        self.seamless_view.children = tuple(views)
        return pictures

    # -- plain output

    def _repr_mimebundle_(self, **kwargs) -> dict[str, Any]:
        return widget_bundle(self.widget, "The nbkit prompt form (a widget: it works while the notebook "
                                          "runs).")

    def _ipython_display_(self):
        """display(form): the widgets, and under them a plain output that each run's end fills in with
        its images, folded (the gallery shows them live), so that the saved notebook keeps them."""
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)
        self._plain_outputs.append(display({"text/plain": ""}, raw=True, display_id=True))

    def _show_plain(self, markup: str) -> None:
        """Replaces the plain output under each displayed form (a display update: JupyterLab applies it
        from this thread, and it is what the saved notebook keeps)."""
        for handle in self._plain_outputs:
            with contextlib.suppress(Exception):     # no frontend (a script, a test): nothing to update
                handle.update({"text/html": markup, "text/plain": ""} if markup else {"text/plain": ""},
                              raw=True)

    def _results_summary(self) -> str:
        count = len(self._finished)
        summary = f"The last run's {count} image(s) as plain output (kept in the saved notebook)"
        return (f'<details><summary style="{CAPTION_STYLE}; cursor: pointer">{summary}</summary>'
                f"{self.results_html()}</details>")

    def results_html(self) -> str:
        """The last run's finished images (with the seed and folder) as HTML; '' when there are none."""
        if not self._finished:
            return ""
        pairs = sorted(self._finished)
        header = [f"seed {self.seed_used}" if self.seed_used is not None else "",
                  f"saved in {self.folder.path}" if self.folder else "",
                  "stopped" if self.stopped else ""]
        header_line = " · ".join(part for part in header if part)
        return (f'<div style="{CAPTION_STYLE}; margin-bottom: 6px">{html.escape(header_line)}</div>'
                + images_html([self._finished[pair][1] for pair in pairs],
                              [self._finished[pair][0] for pair in pairs], numbers=[i + 1 for _, i in pairs]))

    def show_results(self) -> None:
        """Shows the last run's images as plain output: run it in the cell after the form, and the
        images stay in the saved notebook (the form's gallery is widgets, which do not)."""
        if self.running:
            print("A run is still going: run this cell again when it has ended.")
        elif not self._finished:
            print("No images yet: click Generate in the form above, then run this cell again.")
        else:
            count = len(self._finished)
            show_html(self.results_html(), f"{count} image(s), seed {self.seed_used}"
                       + (f", saved in {self.folder.path}" if self.folder else ""))
