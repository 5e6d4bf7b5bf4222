"""What ipywidgets 7 (Colab's) and 8 do differently, in one place, so that the form and the picker work
on both."""

from __future__ import annotations

from typing import Any


def widget_bundle(widget: Any, text: str) -> dict[str, Any]:
    """What displaying `widget` sends, with `text` in place of its repr ("VBox(children=…") where
    widgets do not show (a saved notebook on GitHub). Built here rather than by the widget's
    `_repr_mimebundle_`, which ipywidgets 7 lacks; the widget view is the same in 7 and 8."""
    return {"text/plain": text,
            "application/vnd.jupyter.widget-view+json": {"version_major": 2, "version_minor": 0,
                                                         "model_id": widget.model_id}}


def set_tooltip(widget: Any, text: str) -> None:
    """ipywidgets 8 calls it `tooltip` on every widget; 7 has `tooltip` on buttons only, and
    `description_tooltip` on the others (8 still takes it, with a deprecation warning)."""
    setattr(widget, "tooltip" if widget.has_trait("tooltip") else "description_tooltip", text)
