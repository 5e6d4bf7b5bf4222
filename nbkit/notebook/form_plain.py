"""The prompt form's plain output. Its gallery is widgets, which a saved notebook cannot show: displaying
the form also puts a plain output under it that each run's end fills in (where the front end applies
display updates from a thread, as JupyterLab does), and `show_results()`, run in a later cell, shows the
last run's images as plain output anywhere."""

from __future__ import annotations

import contextlib
import html
from typing import Any

from nbkit.notebook.html_views import CAPTION_STYLE, images_html, show_html
from nbkit.notebook.ipywidgets_compat import widget_bundle


class PlainOutput:
    """`GenerateForm`'s plain output (one of its parts)."""

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
