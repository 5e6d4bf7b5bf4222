"""The prompt form's widgets and how they are laid out: fields, buttons, the bar, the status line and the
places the gallery and its pictures go. Every field shrinks with its cell, so that the form never scrolls
sideways from 800 px up in JupyterLab, the classic Notebook and Colab (ipywidgets 7 and 8)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from nbkit.notebook.form_fields import HELP
from nbkit.notebook.form_progress import on_cpu, previews_note
from nbkit.notebook.ipywidgets_compat import set_tooltip
from nbkit.notebook.local_models import model_folders, upscaler_files
from nbkit.notebook.translate_box import TranslateBox
from nbkit.weights import registry

# The root box's class: tests/notebook/test_form_browser.py finds the form by it.
FORM_CLASS = "nbkit-form"


def error_status(error: BaseException, more: str = "") -> str:
    """The status line for an error: its one-line message in red (never a traceback), then `more`."""
    return (f"<span style='color:#b00020'><b>Error:</b> "
            f"{html.escape(str(error) or type(error).__name__)}</span>{more}")


class FormLayout:
    """The widgets of `GenerateForm` (its first part): `_build` makes them and lays them out in
    `self.widget`; `_say` and `_hide_bar` are the two things every part of the form shows."""

    def _build(self, pipe: Any, load: Any, upscaler: Any, translators: Any, cache: Path) -> None:
        import ipywidgets as w

        style = {"description_width": "initial"}
        # Widths are "auto" with a minimum that fits the label, rows wrap, and full-width fields stretch (no
        # 100%, which a widget's margin pushes past the edge).
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
                                     layout=field("320px"))      # the track: ~115 px beside its label
        self.extend_direction = w.Dropdown(options=["right", "down"], value="right", description="Extend",
                                           style=style, layout=field("130px"))
        self.extend_rows = w.IntSlider(value=8, min=1, max=15, description="by rows/columns", style=style,
                                       layout=field("290px"))
        # A registered name or a folder (./mini): a Combobox takes both, and lists the folders found here.
        names = list(registry.DALLEBART_MODELS)
        names += [name for name in [pipe.name, *model_folders(cache)] if name not in names]
        self.model = w.Combobox(options=names, value=pipe.name, placeholder="a name or a folder, e.g. ./mini",
                                ensure_option=False, description="Model", style=style,
                                disabled=load is None, layout=field("200px"))
        self.upscaler = w.Combobox(options=list(registry.UPSCALER_MODELS) + upscaler_files(cache),
                                   value=str(getattr(upscaler, "model_name", upscaler)), ensure_option=False,
                                   placeholder="esrgan-x4, or a .pth / .safetensors file",
                                   description="Upscaler", style=style, layout=field("200px"))
        self.previews = w.Checkbox(value=not on_cpu(pipe), description="Previews while drawing", indent=False,
                                   layout=w.Layout(width="auto"))
        self.previews_note = w.HTML(layout=w.Layout(width="auto", min_width="0"))
        self.model_note = w.HTML(layout=w.Layout(width="auto", min_width="0"))
        self.translate = TranslateBox(translators)      # the Translate choice and the English to draw
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
        settings = w.HBox([self.n_images, self.seed, self.model, self.model_note], layout=row())
        sampling = w.HBox([self.temperature, self.top_k, self.top_p, self.condition_scale], layout=row())
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
        self.widget.add_class(FORM_CLASS)
        self._help(load)
        self.previews.observe(lambda _change: self._describe_previews(), "value")
        self._describe_previews()

    def _help(self, load: Any) -> None:
        """Every field's help text (tooltips), and why the model cannot be changed when it cannot."""
        for name, text in HELP.items():
            set_tooltip(getattr(self, name), text)
        self.generate_button.tooltip = "make the prompts' images (they appear as they form)"
        self.stop_button.tooltip = "stop after the current step; finished images are kept and saved"
        self.seamless_button.tooltip = "each prompt's images decoded as one picture, saved with the run"
        if load is None:
            self.model_note.value = ('<span style="opacity: .7">fixed here: change MODEL in the cell above '
                                     "and run it again</span>")
        else:
            self.model_note.layout.display = "none"     # an empty widget's margins would narrow its row

    def _describe_previews(self) -> None:
        """What ticking Previews costs, measured once a decode was timed."""
        self.previews_note.value = previews_note(self.pipe, self.previews.value)

    def _say(self, message: str) -> None:
        """The status line (HTML); wrapped lines get the spacing of text, not of a row of widgets."""
        self.status.value = (f'<div style="line-height: 1.45; margin: 4px 0; white-space: normal; '
                             f'overflow-wrap: anywhere">{message}</div>')

    def _hide_bar(self) -> None:
        self.progress.value, self.progress.max, self.progress_label.value = 0, 1, ""
        self.bar.layout.display = "none"
