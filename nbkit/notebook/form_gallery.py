"""The prompt form's gallery: a grid of cells that fill in as the images form, each finished one with its
actions (Vary, Extend, Upscale) in one row under it; an edit's source first, its results beside it; the
extensions joined to their source and the seamless picture under the grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nbkit.notebook.html_views import caption_html, placeholder_png, png_of


def caption_widget(markup: str) -> Any:
    """A cell's caption: as wide as its cell (its text is cut with an ellipsis, whole on hover)."""
    import ipywidgets as w

    # width 0 + min-width 100%: the text adds nothing to the cell's width (a long prompt would widen the
    # column past the form's edge) and still fills it
    return w.HTML(f'<div style="width: 0; min-width: 100%">{markup}</div>',
                  layout=w.Layout(width="auto", min_width="0", max_width="100%", margin="0"))


def cell_layout(outline: bool = False) -> Any:
    """A gallery cell: it shrinks with its column and never scrolls (an image at 100% plus a widget's margin
    would give every thumbnail a scrollbar)."""
    import ipywidgets as w

    return w.Layout(min_width="0", width="auto", overflow="hidden", margin="0",
                    border="2px dashed #9aa0a6" if outline else "")


def thumbnail(png: bytes) -> Any:
    import ipywidgets as w

    return w.Image(value=png, format="png", layout=w.Layout(width="100%", height="auto", margin="0"))


def picture_view(pixels: np.ndarray, caption: str) -> Any:
    """A picture under the gallery at its own size, narrower when the cell is."""
    import ipywidgets as w

    return w.VBox([w.Image(value=png_of(pixels), format="png",
                           layout=w.Layout(max_width="100%", width=f"{pixels.shape[1]}px")), w.HTML(caption)],
                  layout=w.Layout(width="auto", min_width="0", max_width="100%"))


class Gallery:
    """`GenerateForm`'s gallery (one of its parts)."""

    def _init_gallery(self) -> None:
        self._slots: dict[tuple[int, int], Any] = {}      # (prompt, image) → its Image widget
        self._cells: dict[tuple[int, int], Any] = {}      # → its gallery cell (image and caption)
        self._finished: dict[tuple[int, int], tuple[str, bytes]] = {}     # → (prompt, PNG) once finished
        self._sources: dict[tuple[int, int], Any] = {}     # → what "Variations" starts from (image or PNG)
        self._source_cells: tuple = ()                     # an edit's source, first in the gallery
        self._gallery_translations: tuple = ()             # what was typed, per prompt of the gallery's run

    def _clear_gallery(self) -> None:
        """Empties the grid; what was typed for the last run's prompts stays (an edit of it uses it)."""
        typed = self._gallery_translations
        self._init_gallery()
        self._gallery_translations = typed
        self.gallery.children = ()
        self.seamless_view.children = ()
        self.seamless_button.disabled = True

    def _start_gallery(self, request) -> None:
        import ipywidgets as w

        self.bar.layout.display = "flex"
        self._gallery_translations = tuple(request.translations)
        self._slots = {pair: thumbnail(placeholder_png()) for pair in request.images}
        caption = lambda pair: caption_widget(caption_html(pair[1] + 1, request.prompts[pair[0]]))
        self._cells = {pair: w.VBox([image, caption(pair)], layout=cell_layout())
                       for pair, image in self._slots.items()}
        self.gallery.children = (*self._source_cells, *self._cells.values())

    def _source_cell(self, edit: tuple) -> None:
        """An edit's source, first in the gallery: its variations or extensions are shown beside it."""
        import ipywidgets as w

        kind, _source, (prompt, png) = edit
        what = (f"the source: its first {self.keep_rows.value} of 16 rows are kept" if kind == "vary" else
                f"the source: continued {self.extend_direction.value} by {self.extend_rows.value}")
        caption = caption_widget(caption_html(None, f"{prompt} ({what})"))
        self._source_cells = (w.VBox([thumbnail(png), caption], layout=cell_layout(outline=True)),)
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

    def _keep_finished_cells(self) -> None:
        """At a run's end: the slots that got no finished image go (a Stop, an error)."""
        if self._slots:
            kept = [cell for pair, cell in self._cells.items() if pair in self._finished]
            self.gallery.children = (*self._source_cells, *kept)

    def _show_joined(self, source, images: list, edit: dict) -> None:
        """Each extension joined to the image it continues, decoded as one picture, under the gallery."""
        from nbkit.generation.token_grids import stitched_tokens

        views = []
        for image in images:
            joined = self.pipe.decode_grid(stitched_tokens(source.tokens, [image.tokens], edit["direction"],
                                                           edit["rows"]))
            caption = caption_html(image.image_index + 1, f"{image.prompt} (joined to the source)")
            views.append(picture_view(joined, caption))
        self.seamless_view.children = tuple(views)

    def seamless(self, _button=None) -> list[np.ndarray]:
        """The Seamless picture button: each prompt's finished images laid out in the most square full grid
        (`seamless_columns`) and decoded as one picture, shown under the gallery and saved in the
        run's folder. Returns the pictures."""
        import html

        from PIL import Image

        from nbkit.generation.token_grids import seamless_columns, seamless_tokens
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
            views.append(picture_view(picture, caption))
        self.seamless_view.children = tuple(views)
        self.seamless_button.disabled = False
        where = ("Saved as " + ", ".join(html.escape(path) for path in saved_as) + "." if saved_as
                 else "Not saved: this form has no output folder.")
        self._say(f"Seamless picture{'s' if len(pictures) > 1 else ''} below. {where}")
        return pictures
