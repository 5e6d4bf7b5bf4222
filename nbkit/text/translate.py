"""Prompts in any language → English, before DALL·E mini's text normalizer sees them.

`pick_translator` reads the prompt's script (Han, kana, Hangul, Cyrillic, Greek, Arabic, ...) and
names the opus-mt model for it, falling back to the many-to-English `translate-mul`; an English
(Latin-script) prompt needs none, and nothing is loaded. `Translator` holds one loaded opus-mt
folder and translates a batch of prompts in one call, compiled once per length bucket.
"""

from __future__ import annotations

import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

# Unicode script (the first word of a character's name) → the registry's translator for it.
SCRIPT_MODELS = {"CJK": "translate-zh", "HIRAGANA": "translate-ja", "KATAKANA": "translate-ja",
                 "HANGUL": "translate-ko", "CYRILLIC": "translate-ru", "GREEK": "translate-mul",
                 "ARABIC": "translate-ar", "HEBREW": "translate-mul", "DEVANAGARI": "translate-mul",
                 "THAI": "translate-mul"}
FALLBACK_MODEL = "translate-mul"
LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)
_NEW_TOKENS_PER_SOURCE = 2   # an English rendering rarely needs more than twice the source pieces


def scripts(text: str) -> set[str]:
    """The non-Latin scripts of the letters in `text` (digits, punctuation and emoji are not)."""
    found = set()
    for char in text:
        if ord(char) < 0x250 or not unicodedata.category(char).startswith("L"):
            continue
        name = unicodedata.name(char, "")
        found.add(name.split(" ")[0] if name else "UNKNOWN")
    return found


def pick_translator(text: str) -> str | None:
    """The registry name of the translator `auto` uses for `text`, or None when it reads as English.
    Kana anywhere means Japanese (Japanese mixes Han and kana); otherwise one known script picks its
    model and several, or an unknown one, the many-to-English model."""
    found = scripts(text)
    if not found:
        return None
    if found & {"HIRAGANA", "KATAKANA"}:
        return "translate-ja"
    models = {SCRIPT_MODELS.get(script, FALLBACK_MODEL) for script in found}
    return models.pop() if len(models) == 1 else FALLBACK_MODEL


def bucket(length: int, limit: int) -> int:
    """The smallest bucket that holds `length` tokens, never beyond the translator's `limit`."""
    return min(next((b for b in LENGTH_BUCKETS if b >= length), limit), limit)


@dataclass(frozen=True)
class Translation:
    typed: str
    english: str
    translator: str | None     # registry name, folder or hub id; None when it passed through
    revision: str | None = None


class Translator:
    """One opus-mt folder, loaded: `translate(["一只猫", ...])` → English strings."""

    def __init__(self, folder: str | Path, name: str | None = None, revision: str | None = None,
                 dtype: Any = jnp.float32, beam: bool = True):
        from nbkit.text.marian_search import GenerationConfig
        from nbkit.text.sentencepiece_tokenizer import MarianTokenizer
        from nbkit.weights.marian_weights import load_marian

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"The translator folder {folder} lacks config.json: download it again "
                                    "(nbkit download translate-...), or pass --translate off.")
        self.tokenizer = MarianTokenizer(folder)
        self.model, self.params = load_marian(folder, dtype)
        self.generation = GenerationConfig.from_folder(folder, self.model.config.pad_token_id)
        self.name, self.revision, self.beam = name or str(folder), revision, beam
        self.max_source = min(self.model.config.max_position_embeddings, self.generation.max_length)

    def token_ids(self, texts: list[str]) -> tuple[np.ndarray, list[str]]:
        """Generated ids for a batch (one compiled shape per length bucket) and the decoded texts."""
        from nbkit.text.marian_search import beam_search, greedy_search

        encoded = self.tokenizer.encode(texts, self.max_source)
        for text, cut in zip(texts, encoded.truncated, strict=True):
            if cut:
                warnings.warn(f"The prompt {text[:40]!r}… is longer than the translator takes "
                              f"({self.max_source} tokens): only its start is translated. Shorten it, "
                              "or pass --translate off and write it in English.", stacklevel=3)
        width = bucket(encoded.input_ids.shape[1], self.max_source)
        encoded = self.tokenizer.encode(texts, self.max_source, pad_to=width)
        rows = 1 << max(0, len(texts) - 1).bit_length()        # batch sizes: powers of two
        ids = np.pad(encoded.input_ids, ((0, rows - len(texts)), (0, 0)),
                     constant_values=self.tokenizer.pad_id)
        mask = np.pad(encoded.attention_mask, ((0, rows - len(texts)), (0, 0)))
        mask[len(texts):, 0] = 1
        steps = min(_NEW_TOKENS_PER_SOURCE * width, self.model.config.max_position_embeddings - 1)
        if self.beam and self.generation.num_beams > 1:
            sequences, _ = beam_search(self.model, self.params, ids, mask, self.generation, steps)
        else:
            sequences = greedy_search(self.model, self.params, ids, mask, self.generation, steps)
        sequences = np.asarray(sequences)[: len(texts)]
        return sequences, [self.tokenizer.decode(row) for row in sequences]

    def translate(self, texts: list[str]) -> list[Translation]:
        """English for each prompt; a prompt whose translation comes out empty is an error."""
        english = self.token_ids(list(texts))[1] if texts else []
        empty = [text for text, out in zip(texts, english, strict=True) if not out.strip() and text.strip()]
        if empty:
            raise ValueError(f"The translator {self.name} gave no English for {empty[0]!r}: type the "
                             "prompt in English, or pick another translator with --translate NAME.")
        return [Translation(text, out, self.name, self.revision)
                for text, out in zip(texts, english, strict=True)]


def load_translator(choice: str, cache: str | Path | None = None, progress: bool = True) -> Translator:
    """A registry name (`translate-zh`), a folder or a hub id → a loaded Translator."""
    from nbkit.weights import hub
    from nbkit.weights.registry import MODELS, TRANSLATOR

    registered = MODELS.get(choice)
    if registered is not None and registered.kind != TRANSLATOR:
        names = ", ".join(n for n, m in MODELS.items() if m.kind == TRANSLATOR)
        raise ValueError(f"{choice} is not a translator: use one of {names}, a folder, or --translate off.")
    folder = hub.fetch(choice, cache, progress=progress)
    return Translator(folder, name=choice, revision=registered.revision if registered else None)


def translate_prompts(prompts: list[str], negative: str | list[str], choice: str = "auto",
                      cache: str | Path | None = None, loader=None
                      ) -> tuple[list[str], list[str], list[dict | None]]:
    """The English prompts and negative prompts to draw, and per prompt what was translated (None where
    nothing was). `choice`: "off", "auto" (by script; English loads nothing) or a translator to use for
    every prompt that is not English. Each translator is loaded once, all its texts in one batch."""
    negatives = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
    loader = loader or load_translator
    if choice == "off":
        return list(prompts), negatives, [None] * len(prompts)
    texts = list(prompts) + negatives
    wanted = [pick_translator(text) if text.strip() else None for text in texts]
    if choice != "auto":
        wanted = [None if name is None else choice for name in wanted]
    english = list(texts)
    used: dict[int, Translation] = {}
    for name in sorted({name for name in wanted if name is not None}):
        translator = loader(name, cache)
        indexes = [i for i, n in enumerate(wanted) if n == name]
        for i, done in zip(indexes, translator.translate([texts[i] for i in indexes]), strict=True):
            english[i], used[i] = done.english, done
    records: list[dict | None] = []
    for i in range(len(prompts)):
        done, negative_done = used.get(i), used.get(len(prompts) + i)
        if done is None and negative_done is None:
            records.append(None)
            continue
        translator = done or negative_done
        record = {"typed_prompt": prompts[i], "translator": translator.translator,
                  "translator_revision": translator.revision or ""}
        if negative_done is not None:
            record["typed_negative_prompt"] = negatives[i]
        records.append(record)
    return english[: len(prompts)], english[len(prompts):], records


def use_edited_english(prompts: list[str], negative: str | list[str],
                       translated: tuple[list[str], list[str], list[dict | None]],
                       edited: list[str], edited_negative: str | None = None
                       ) -> tuple[list[str], list[str], list[dict | None]]:
    """The English a person checked, and maybe edited, in place of the translator's: `translated` is
    `translate_prompts`' answer for (`prompts`, `negative`), `edited` one English text per prompt and
    `edited_negative` the negative prompt's (None: as translated). A record whose English was edited
    says so (`english_edited`) and keeps what the translator gave; an English prompt whose text was
    edited gets a record too (its translator "")."""
    english, negatives, records = translated
    typed_negatives = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
    if len(edited) != len(prompts):
        raise ValueError(f"The English has {len(edited)} line(s) for {len(prompts)} prompt(s): give one "
                         "line per prompt, or translate again.")
    drawn, drawn_negatives, kept = [], [], []
    for index, (typed, machine, machine_negative, record, wanted) in enumerate(
            zip(prompts, english, negatives, records, edited, strict=True)):
        wanted = wanted.strip()
        if not wanted:
            raise ValueError(f"The English of prompt {index + 1} is empty: type what to draw, or translate "
                             "again.")
        wanted_negative = machine_negative if edited_negative is None else edited_negative.strip()
        changes = {}
        if wanted != machine:
            changes["translator_english"] = machine
        if wanted_negative != machine_negative:
            changes["translator_negative_english"] = machine_negative
            changes["typed_negative_prompt"] = typed_negatives[index]
        if changes:
            base = dict(record) if record else {"typed_prompt": typed, "translator": "",
                                                "translator_revision": ""}
            record = {**base, **changes, "english_edited": "yes"}
        drawn.append(wanted)
        drawn_negatives.append(wanted_negative)
        kept.append(record)
    return drawn, drawn_negatives, kept
