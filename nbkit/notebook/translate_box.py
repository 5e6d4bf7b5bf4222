"""The prompt form's translation (ipywidgets 7 and 8): a Translate choice (auto, off, a registered
opus-mt translator, or a folder / hub id) and the "check the English" step. A prompt that needs a
translator is not drawn on the first Generate: its English is shown in an editable field, and the
next Generate draws that field (edited or not) and records what was typed. English prompts pass
straight through and load nothing. The translating itself is `nbkit.text.translate`'s, as for the
CLI and the server; this file only shows it.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from nbkit.weights.registry import TRANSLATOR_MODELS

FOLDER = "folder"                 # the choice whose translator is typed in the folder field
CHECK_MESSAGE = ("Check the English below (edit it if you like), then click <b>Generate</b> to draw it. "
                 "Translate: off draws the prompts as typed.")

Translated = tuple[list[str], list[str], list[dict | None]]   # english, negatives, records


def english_lines(text: str) -> list[str]:
    """The English field's lines, one per prompt (blank lines dropped, as in the prompts field)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


class TranslateBox:
    """The Translate choice and the editable English of the prompts it translated. `loader(name,
    cache)` → a Translator (default `load_translator`); each translator is loaded once and kept."""

    def __init__(self, loader: Callable[[str, Any], Any] | None = None, cache: Any = None):
        import ipywidgets as w

        from nbkit.notebook.ipywidgets_compat import set_tooltip

        style = {"description_width": "initial"}
        options = [("auto (by the prompt's script)", "auto"), ("off (draw as typed)", "off"),
                   *[(name, name) for name in TRANSLATOR_MODELS], ("a folder or hub id…", FOLDER)]
        self.choice = w.Dropdown(options=options, value="auto", description="Translate", style=style,
                                 layout=w.Layout(width="auto"))
        set_tooltip(self.choice, "prompts not in English are translated by an opus-mt model first; "
                                 "English prompts load nothing")
        self.folder = w.Text(value="", placeholder="a folder with an opus-mt checkpoint, or a hub id",
                             description="Translator", style=style,
                             layout=w.Layout(width="auto", min_width="300px", display="none"))
        self.english = w.Textarea(description="English to draw", style=style,
                                  layout=w.Layout(width="100%", height="4em", display="none"))
        self.english_negative = w.Text(description="English negative prompt", style=style,
                                       layout=w.Layout(width="100%", display="none"))
        self.note = w.HTML()
        self.choice.observe(self._chose, names="value")
        self.widget = w.VBox([w.HBox([self.choice, self.folder], layout=w.Layout(flex_flow="row wrap")),
                              self.english, self.english_negative, self.note])
        self._loader, self._cache = loader, cache
        self._kept: dict[str, Any] = {}
        self._shown: tuple[tuple, Translated] | None = None    # (what was translated, its translation)

    def _chose(self, change: dict) -> None:
        self.folder.layout.display = "" if change["new"] == FOLDER else "none"

    def chosen(self) -> str:
        """auto, off, a registered name, or the folder / hub id typed beside the choice."""
        if self.choice.value != FOLDER:
            return self.choice.value
        folder = self.folder.value.strip()
        if not folder:
            raise ValueError("Type the translator's folder (or a hub id) beside Translate, or pick auto.")
        return folder

    def _load(self, name: str, cache: Any, say: Callable[[str], None]) -> Any:
        if name not in self._kept:
            from nbkit.text.translate import load_translator

            say(f"Loading the translator {html.escape(name)} (first use only)…")
            self._kept[name] = (self._loader or load_translator)(name, cache)
        return self._kept[name]

    def hide(self) -> None:
        self._shown = None
        self.english.layout.display = self.english_negative.layout.display = "none"
        self.note.value = ""

    def english_to_draw(self, prompts: list[str], negative: str,
                        say: Callable[[str], None] = lambda message: None) -> Translated | None:
        """What Generate draws: (English prompts, negative prompts, records). None when the prompts
        needed translating and their English is now shown to be checked: the next Generate draws it."""
        from nbkit.text.translate import translate_prompts, use_edited_english

        choice = self.chosen()
        if choice == "off":
            self.hide()
            return list(prompts), [negative] * len(prompts), [None] * len(prompts)
        key = (tuple(prompts), negative, choice)
        if self._shown is not None and self._shown[0] == key:        # checked: draw the field's English
            edited_negative = self.english_negative.value if negative else None
            return use_edited_english(list(prompts), negative, self._shown[1],
                                      english_lines(self.english.value), edited_negative)
        translated = translate_prompts(list(prompts), negative, choice, self._cache,
                                       loader=lambda name, cache: self._load(name, cache, say))
        if all(record is None for record in translated[2]):       # English: nothing to check
            self.hide()
            return translated
        english, negatives, records = translated
        self._shown = (key, translated)
        self.english.value = "\n".join(english)
        self.english.layout.display = ""
        self.english_negative.value = negatives[0] if negative else ""
        self.english_negative.layout.display = "" if negative else "none"
        used = sorted({record["translator"] for record in records if record is not None})
        self.note.value = (f'<div style="font-size: 0.9em; opacity: 0.8">Translated with '
                           f'{html.escape(", ".join(used))}: one line per prompt; the records keep what '
                           "you typed.</div>")
        return None

    def negative_for_edit(self, negative: str) -> tuple[str, dict | None]:
        """A variation's or extension's negative prompt in English (translated without a check: the
        image's own prompt is already English), and the record of what was typed, if it was translated."""
        from nbkit.text.translate import translate_prompts

        choice = self.chosen()
        if not negative or choice == "off":
            return negative, None
        _, negatives, records = translate_prompts([""], negative, choice, self._cache,
                                                  loader=lambda name, cache: self._load(name, cache,
                                                                                        lambda m: None))
        record = records[0]
        return negatives[0], None if record is None else {k: v for k, v in record.items()
                                                          if k != "typed_prompt"}
