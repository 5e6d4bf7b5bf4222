"""The prompt form (ipywidgets): prompts and settings, Generate and Stop, a progress bar and a gallery
that fills in as the images form, with Variations, Extend, Upscale and a seamless picture. It only reads
fields and shows events: it builds a spec (`Generate`, `Vary`, `Extend`) and hands it to the one run driver
(`nbkit.output.runs.save_run`) with what to show of each event; images are upscaled beside them by
`nbkit.output.pictures.upscale_saved`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nbkit.generation.progress import describe, truncation_message
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


class FormErrors(ValueError):
    """Every field of the form that is wrong (`messages`, one a field), found at once: fixing one does not
    reveal the next."""

    def __init__(self, messages: list[str]):
        super().__init__(" ".join(messages))
        self.messages = messages


def read_form(prompts: str, n_images: int, seed: str, temperature: float, top_k: int, top_p: float,
              condition_scale: float) -> FormValues:
    """The form's raw values → arguments, or a FormErrors (a ValueError) that says what to fix in each
    wrong field, all of them."""
    errors: list[str] = []
    lines = [line.strip() for line in prompts.splitlines() if line.strip()]
    if not lines:
        errors.append("Type at least one prompt (one per line).")
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        errors.append(f"Images per prompt must be a whole number ≥ 1 (got {n_images!r}).")
    try:
        seed = parse_seed(seed)
    except ValueError as error:
        errors.append(str(error))
    sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p,
                "condition_scale": condition_scale}
    defaults = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "condition_scale": 10.0}
    for name, value in sampling.items():     # each setting checked alone, so that every bad one is named
        try:
            SamplingSettings(**{**defaults, name: value})
        except ValueError as error:
            errors.append(str(error))
    if errors:
        raise FormErrors(errors)
    return FormValues(lines, int(n_images), seed, sampling)


class _Stopped(Exception):
    """Stop was clicked during an upscale."""


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


def _weight_files() -> list[str]:
    """Upscaler weights already in the model cache (.pth, .safetensors), to pick from the form's field."""
    from nbkit import places

    with contextlib.suppress(OSError):
        root = places.model_cache()
        if root.is_dir():
            found = sorted(str(path) for pattern in ("*.pth", "*/*.pth", "*.safetensors", "*/*.safetensors")
                           for path in root.glob(pattern))
            return [path for path in found if "esrgan" in path.lower() or "upscal" in path.lower()][:20]
    return []


HELP = {   # every field's help, shown on hover (and read by screen readers)
    "prompts": "One prompt per line; each gets its own images. The model reads about 64 text tokens: "
               "longer prompts are cut, and the form says so.",
    "negative_prompt": "What the images should not show (super-conditioning steers away from it).",
    "n_images": "How many images each prompt gets (and each Variations / Extend run makes).",
    "seed": "Digits 0-9, or blank for a random one; the same seed and settings make the same images.",
    "temperature": "Above 0; lower is safer and more alike, higher more varied (1.0: as trained).",
    "top_k": "Draw each token from the k likeliest (a whole number ≥ 1).",
    "top_p": "In (0, 1]: draw from the likeliest tokens that together reach p; 1 turns it off.",
    "condition_scale": "≥ 0: how closely the images follow the prompt (super-conditioning; 10 is usual).",
    "keep_rows": "Variations keep this many rows of 16 from the top of the image you vary.",
    "extend_direction": "Extend continues an image to the right or down.",
    "extend_rows": "How many new rows (or columns) of 16 each extension draws.",
    "model": "A registered model or a folder with config.json and flax_model.msgpack (e.g. ./mini).",
    "upscaler": "A registered upscaler (esrgan-x4) or a local .pth / .safetensors weights file.",
}


def _caption(markup: str) -> Any:
    """A cell's caption: as wide as its cell (its text is cut with an ellipsis, whole on hover)."""
    import ipywidgets as w

    # width 0 + min-width 100%: the text adds nothing to the cell's width (a long prompt would widen the
    # column past the form's edge) and still fills it
    return w.HTML(f'<div style="width: 0; min-width: 100%">{markup}</div>',
                  layout=w.Layout(width="auto", min_width="0", max_width="100%", margin="0"))


def _cell_layout(outline: bool = False) -> Any:
    """A gallery cell: it shrinks with its column and never scrolls (an image at 100% plus a widget's margin
    would give every thumbnail a scrollbar)."""
    import ipywidgets as w

    return w.Layout(min_width="0", width="auto", overflow="hidden", margin="0",
                    border="2px dashed #9aa0a6" if outline else "")


class GenerateForm:
    """The prompt form: settings, Generate and Stop, a progress bar, and a gallery that fills in
    as the images form. Generation runs in a thread so that Stop can be clicked; Generate stays
    disabled until that thread has ended. Errors appear as a message in the form.

    `out`: a folder to save each run in (see `runs.save_run`); `load(name)`: makes a
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
        self.decode_every = decode_every or 64       # tokens between previews, when Previews is ticked
        style = {"description_width": "initial"}
        # Every field shrinks with its cell (no sideways scroll from 800 px up, in ipywidgets 7 and 8): widths
        # are "auto" with a minimum that fits its label, rows wrap, and full-width fields stretch (no 100%,
        # which a widget's margin pushes past the edge).
        field = lambda minimum="150px": w.Layout(width="auto", min_width=minimum, flex="1 1 auto")
        wide = lambda **more: w.Layout(width="auto", align_self="stretch", **more)
        row = lambda: w.Layout(flex_flow="row wrap", align_items="center", width="auto")
        # Unbounded number fields: a bounded one silently clamps (top-k 0 → 1); read_form says what is wrong.
        self.prompts = w.Textarea(placeholder="one prompt per line", description="Prompts",
                                  layout=wide(height="5em"), style=style)
        self.n_images = w.IntText(value=4, description="Images per prompt", style=style, layout=field())
        self.seed = w.Text(value="", placeholder="blank = random", description="Seed", style=style,
                           layout=field())
        self.temperature = w.FloatText(value=1.0, step=0.05, description="Temperature", style=style,
                                       layout=field("140px"))
        self.top_k = w.IntText(value=50, description="Top-k", style=style, layout=field("110px"))
        self.top_p = w.FloatText(value=1.0, step=0.05, description="Top-p", style=style,
                                 layout=field("110px"))
        self.condition_scale = w.FloatText(value=10.0, step=0.5, description="Condition scale", style=style,
                                           layout=field("160px"))
        self.negative_prompt = w.Text(value="", placeholder="what the images should not show (optional)",
                                      description="Negative prompt", style=style, layout=wide())
        self.keep_rows = w.IntSlider(value=8, min=1, max=15, description="Variations keep rows", style=style,
                                     layout=field("260px"))
        self.extend_direction = w.Dropdown(options=["right", "down"], value="right", description="Extend",
                                           style=style, layout=field("130px"))
        self.extend_rows = w.IntSlider(value=8, min=1, max=15, description="by rows/columns", style=style,
                                       layout=field("240px"))
        names = list(registry.DALLEBART_MODELS)
        # A registered name or a folder (./mini): a Combobox takes both.
        self.model = w.Combobox(options=names + ([pipe.name] if pipe.name not in names else []),
                                value=pipe.name, placeholder="a name or a folder, e.g. ./mini",
                                ensure_option=False, description="Model", style=style,
                                disabled=load is None, layout=field("200px"))
        self.upscaler = w.Combobox(options=list(registry.UPSCALER_MODELS) + _weight_files(),
                                   value=str(getattr(upscaler, "model_name", upscaler)), ensure_option=False,
                                   placeholder="esrgan-x4, or a .pth / .safetensors file",
                                   description="Upscaler", style=style, layout=field("200px"))
        self.previews = w.Checkbox(value=not on_cpu, description="Previews while drawing", indent=False,
                                   layout=w.Layout(width="auto"))
        self.previews_note = w.HTML(layout=w.Layout(width="auto"))
        self.model_note = w.HTML(layout=w.Layout(width="auto"))
        self.translate = TranslateBox(translators)      # the Translate choice and the English to draw
        self._gallery_translations: tuple = ()          # what was typed, per prompt of the gallery's run
        self.generate_button = w.Button(description="Generate", button_style="primary", icon="play",
                                        layout=w.Layout(width="auto"))
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True,
                                    layout=w.Layout(width="auto"))
        self.seamless_button = w.Button(description="Seamless picture", icon="th-large", disabled=True,
                                        layout=w.Layout(width="auto", min_width="max-content"))
        self.seamless_view = w.VBox(layout=wide())
        self.upscaled_view = w.VBox(layout=wide())            # the upscaled images, under the gallery
        self.progress = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(flex="1 1 200px", width="auto"))
        self.progress_label = w.HTML(layout=w.Layout(flex="0 1 auto", width="auto"))
        self.status = w.HTML(layout=wide())
        self.notice = w.HTML(layout=wide())        # what the person should know: prompts that were cut
        self.gallery = w.GridBox(layout=wide(
            grid_template_columns="repeat(auto-fill, minmax(min(190px, calc(50% - 4px)), 1fr))",
            grid_gap="8px"))                            # at least two a row, also on a phone
        self._help()
        self.generate_button.on_click(self.generate)
        self.stop_button.on_click(self.stop)
        self.previews.observe(lambda _change: self._describe_previews(), "value")
        self._describe_previews()
        settings = w.HBox([self.n_images, self.seed, self.model, self.model_note], layout=row())
        sampling = w.HBox([self.temperature, self.top_k, self.top_p, self.condition_scale], layout=row())
        self.seamless_button.on_click(self.seamless)
        buttons = w.HBox([self.generate_button, self.stop_button, self.seamless_button, self.previews,
                          self.previews_note], layout=row())
        edits = w.HBox([self.keep_rows, self.extend_direction, self.extend_rows, self.upscaler], layout=row())
        self.bar = w.HBox([self.progress, self.progress_label],      # hidden until a run has a bar to show
                          layout=w.Layout(display="none", align_items="center", flex_flow="row wrap",
                                          width="auto"))
        self.widget = w.VBox([self.prompts, self.negative_prompt, self.translate.widget, settings, sampling,
                              edits, buttons, self.bar, self.status, self.notice, self.gallery,
                              self.seamless_view, self.upscaled_view],
                             layout=w.Layout(width="auto", max_width="100%", overflow="hidden"))
        self.widget.add_class("nbkit-form")
        self.result, self.folder, self.error, self.seed_used, self.stopped = None, None, None, None, False
        self.already_complete = False
        self._slots: dict[tuple[int, int], Any] = {}      # (prompt, image) → its Image widget
        self._cells: dict[tuple[int, int], Any] = {}      # → its gallery cell (image and caption)
        self._finished: dict[tuple[int, int], tuple[str, bytes]] = {}     # → (prompt, PNG) once finished
        self._sources: dict[tuple[int, int], Any] = {}     # → what "Variations" starts from (image or PNG)
        self._source_cells: tuple = ()                     # an edit's source, first in the gallery
        self._edit: tuple | None = None     # ("vary" | "extend", source, (prompt, PNG)) of the next run
        self._made_what = "image(s)"                       # what the run makes, for its summary
        self._lock, self._stopping = threading.RLock(), threading.Event()    # R: widget observers call back
        self._thread, self._active = None, False
        self.keep_click_open = colab.widget_updates_need_an_open_request()     # see _begin
        self._ended = threading.Event()     # set by the run's last action (an interrupted join breaks)
        self._plain_outputs: list = []          # display handles of the plain output under the form
        self._writer = None                     # the run's RunWriter, when it saves into `out`

    def _help(self) -> None:
        """Every field's help text (tooltips), and why the model cannot be changed when it cannot."""
        for name, text in HELP.items():
            set_tooltip(getattr(self, name), text)
        self.generate_button.tooltip = "make the prompts' images (they appear as they form)"
        self.stop_button.tooltip = "stop after the current step; finished images are kept and saved"
        self.seamless_button.tooltip = "each prompt's images decoded as one picture, saved with the run"
        if self.load is None:
            self.model_note.value = ('<span style="opacity: .7">fixed here: change MODEL in the cell above '
                                     "and run it again</span>")

    def _describe_previews(self) -> None:
        """What ticking Previews costs, measured once a decode was timed."""
        on_cpu = self.pipe.mesh.devices.flat[0].platform == "cpu"
        where = "on this CPU " if on_cpu else ""
        self.previews_note.value = (f'<span style="opacity: .7">{where}{html.escape(preview_cost(self.pipe))}'
                                    "</span>" if self.previews.value or on_cpu else "")

    @property
    def running(self) -> bool:
        """True from Generate until the run's thread has done its last action."""
        return self._active

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
            if self.model.value.strip() != self.pipe.name:
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

    def _run_upscale(self, pair: tuple[int, int]) -> None:
        import ipywidgets as w
        from PIL import Image

        from nbkit.generation.upscale import Upscaler

        status, number = "", pair[1] + 1
        try:
            chosen = self.upscaler.value.strip() or registry.DEFAULT_UPSCALER
            if not isinstance(self._upscaler, Upscaler) or self._upscaler.model_name != chosen:
                from nbkit import places
                self._upscaler = Upscaler(chosen, cache=places.model_cache())   # the notebook's cache
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
                from nbkit.output.pictures import upscale_saved

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

    def _clear(self) -> None:
        """Nothing of the previous run stays on show: not its images, its bar or its result (called once the
        fields were read without an error)."""
        self.result, self.folder, self.error, self.seed_used, self.stopped = None, None, None, None, False
        self.already_complete, self._writer = False, None
        self._slots, self._cells, self._finished, self._sources = {}, {}, {}, {}
        self._source_cells = ()
        self.gallery.children = ()
        self.seamless_view.children = ()
        self.upscaled_view.children, self.upscaled = (), {}
        self.seamless_button.disabled = True
        self._hide_bar()
        self._show_plain("")
        self.notice.value = ""
        self._say("Starting…")
        self._reports = 0

    def _say(self, message: str) -> None:
        """The status line (HTML); wrapped lines get the spacing of text, not of a row of widgets."""
        self.status.value = (f'<div style="line-height: 1.45; margin: 4px 0; white-space: normal; '
                             f'overflow-wrap: anywhere">{message}</div>')

    def _hide_bar(self) -> None:
        self.progress.value, self.progress.max, self.progress_label.value = 0, 1, ""
        self.bar.layout.display = "none"

    def _start_gallery(self, request) -> None:
        import ipywidgets as w

        self.bar.layout.display = "flex"
        self._gallery_translations = tuple(request.translations)
        self._slots = {pair: w.Image(value=placeholder_png(), format="png", layout=w.Layout(
            width="100%", height="auto", margin="0"))
                       for pair in request.images}
        self._cells = {pair: w.VBox([image, _caption(caption_html(pair[1] + 1, request.prompts[pair[0]]))],
                                    layout=_cell_layout())
                       for pair, image in self._slots.items()}
        self.gallery.children = (*self._source_cells, *self._cells.values())

    def _source_cell(self, edit: tuple) -> None:
        """An edit's source, first in the gallery: its variations or extensions are shown beside it."""
        import ipywidgets as w

        kind, _source, (prompt, png) = edit
        what = (f"the source: its first {self.keep_rows.value} of 16 rows are kept" if kind == "vary" else
                f"the source: continued {self.extend_direction.value} by {self.extend_rows.value}")
        image = w.Image(value=png, format="png", layout=w.Layout(width="100%", height="auto", margin="0"))
        self._source_cells = (w.VBox([image, _caption(caption_html(None, f"{prompt} ({what})"))],
                                     layout=_cell_layout(outline=True)),)
        self.gallery.children = self._source_cells

    def _fill(self, pair: tuple[int, int], prompt: str, png: bytes, source: Any) -> None:
        import ipywidgets as w

        self._finished[pair], self._sources[pair] = (prompt, png), source
        if pair in self._slots:
            self._slots[pair].value = png
            # One row under each image: three equal buttons with short words (each says more on hover).
            action = lambda word, tip: w.Button(description=word, tooltip=tip, layout=w.Layout(
                flex="1 1 0", width="auto", min_width="0", margin="0", padding="0 2px"))
            vary = action("Vary", "variations: new images keeping the first rows of this one (the slider "
                                  "above says how many), with the form's seed and settings")
            vary.on_click(lambda _button, pair=pair: self.vary(pair))
            extend = action("Extend", "continue this image to the right or down (the settings above)")
            extend.on_click(lambda _button, pair=pair: self.extend(pair))
            upscale = action("Upscale", "this image larger with the Upscaler field's model, shown below and "
                                        "saved beside it")
            upscale.on_click(lambda _button, pair=pair: self.upscale(pair))
            cell = self._cells[pair]
            actions = w.HBox([vary, extend, upscale], layout=w.Layout(
                flex_flow="row nowrap", width="100%", overflow="hidden", grid_gap="2px"))
            cell.children = (*cell.children[:2], actions)

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

    def _finish(self, status: str, keep: bool = False) -> None:
        """The thread's last action: drop the slots that got no finished image, say how the run ended
        (after any Stop's message), then free the buttons. `keep`: nothing ran (a wrong field), what is
        on show stays as it is."""
        with self._lock:
            self._active = False            # first: a Stop from here on finds nothing to stop
            self._say(status)
            if self._slots and not keep:
                kept = [cell for pair, cell in self._cells.items() if pair in self._finished]
                self.gallery.children = (*self._source_cells, *kept)
            if not keep:
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
        self._say("Decoding the seamless picture (each prompt's images as one)…")
        self.seamless_button.disabled = True
        pictures, views, saved_as = [], [], []
        for prompt_index in sorted({p for p, _ in self._finished}):
            pairs = sorted(pair for pair in self._finished if pair[0] == prompt_index)
            columns = seamless_columns(len(pairs))
            if self.folder is not None:     # decoded once, saved, and shown from the saved PNG
                from nbkit.output.pictures import save_seamless
                saved = save_seamless(self.pipe, self.folder, prompt_index, columns)
                saved_as.append(str(saved))
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
        self.seamless_button.disabled = False
        where = ("Saved as " + ", ".join(html.escape(path) for path in saved_as) + "." if saved_as
                 else "Not saved: this form has no output folder.")
        self._say(f"Seamless picture{'s' if len(pictures) > 1 else ''} below. {where}")
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
