"""The prompt form's Upscale button: a gallery image made larger with the Upscaler field's model (a
registered name or a local weights file), on the form's thread, shown under the gallery and saved beside
the image by `nbkit.output.pictures.upscale_saved` when the run was saved."""

from __future__ import annotations

import html
import io

import numpy as np

from nbkit.notebook.form_gallery import picture_view
from nbkit.notebook.form_layout import error_status
from nbkit.notebook.html_views import caption_html
from nbkit.weights import registry


class _Stopped(Exception):
    """Stop was clicked during an upscale."""


class Upscaling:
    """`GenerateForm`'s Upscale (one of its parts). The upscaler (`self._upscaler`: a name, weights file or
    `Upscaler`) is made and loaded by the first upscale, again only when the field names another."""

    def upscale(self, pair: tuple[int, int]) -> None:
        """Makes the gallery's image `pair` larger (its "Upscale" button), on the form's thread: the
        upscaler is loaded by the first upscale; the result is shown under the gallery and saved beside
        the image (and listed with its run) when the run was saved. Stop ends it between windows."""
        self._begin(None, lambda: self._run_upscale(pair))

    def _chosen_upscaler(self):
        from nbkit.generation.upscale import Upscaler

        chosen = self.upscaler.value.strip() or registry.DEFAULT_UPSCALER
        if not isinstance(self._upscaler, Upscaler) or self._upscaler.model_name != chosen:
            self._upscaler = Upscaler(chosen, cache=self.cache)     # the notebook's cache
        return self._upscaler

    def _run_upscale(self, pair: tuple[int, int]) -> None:
        from PIL import Image

        status, number = "", pair[1] + 1
        try:
            upscaler = self._chosen_upscaler()
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
            self.upscaled_view.children = (*self.upscaled_view.children, picture_view(pixels, caption))
            status = f"Upscaled image {number} to {pixels.shape[1]}×{pixels.shape[0]}. {where}"
        except _Stopped:
            status = f"Stopped upscaling image {number}: nothing was saved."
        except Exception as error:  # shown to the user in the form, not as a traceback
            self.error = error
            status = error_status(error)
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
