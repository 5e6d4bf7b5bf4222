"""Prompt normalization: the cleaning rules DALL·E mini's captions went through in training.

The model only ever saw normalized text, so prompts must be cleaned the same way
(lower case ASCII, punctuation folded to commas, hashtags split into words, ...).
Each rule is a small pure function; `TextNormalizer` applies them in training order.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

import emoji
import ftfy
from unidecode import unidecode

WORD_FREQUENCY_FILE = "enwiki-words-frequency.txt"

# Placeholder that protects characters from the punctuation rules. It is made of
# word characters so that later word-based rules treat it as part of a word, exactly
# as during training.
_PLACEHOLDER = "xtokx"


def _protect(name: str) -> str:
    return f"{_PLACEHOLDER}{name}{_PLACEHOLDER}"


class HashtagSplitter:
    """Splits `#sunsetbeach` into `sunset beach` by the most probable word sequence.

    Word cost is log(rank) in an English word-frequency list (Zipf's law), so the
    cheapest segmentation prefers few, common words. Solved by dynamic programming.
    """

    _SEPARATORS = re.compile(r"[^a-zA-Z0-9']+")

    def __init__(self, ranked_words: Iterable[str]):
        self._cost: dict[str, float] = {}
        for rank, word in enumerate(ranked_words):
            self._cost[word] = math.log(rank + 1.0)
        if not self._cost:
            raise ValueError("The word-frequency list is empty; hashtags cannot be split.")
        self._longest = max(len(word) for word in self._cost)

    @classmethod
    def from_file(cls, path: str | Path) -> HashtagSplitter:
        lines = Path(path).read_text(encoding="utf8").splitlines()
        return cls(line.split()[0] for line in lines if line.strip())

    def __call__(self, text: str) -> str:
        words: list[str] = []
        for chunk in self._SEPARATORS.split(text):
            words.extend(self._segment(chunk))
        return " ".join(words)

    def _best_last_word(self, text: str, end: int, cost: list[float]) -> tuple[float, int]:
        """Cheapest (total cost, length) of a word ending at `end`; ties go to the shorter."""
        best = (math.inf, 0)
        for length in range(1, min(end, self._longest) + 1):
            candidate = cost[end - length] + self._cost.get(text[end - length : end].lower(), math.inf)
            if candidate < best[0] or best[1] == 0:
                best = (candidate, length)
        return best

    def _segment(self, text: str) -> list[str]:
        cost = [0.0]
        for end in range(1, len(text) + 1):
            cost.append(self._best_last_word(text, end, cost)[0])

        words_reversed: list[str] = []
        end = len(text)
        while end > 0:
            length = self._best_last_word(text, end, cost)[1]
            word = text[end - length : end]
            previous = words_reversed[-1] if words_reversed else None
            # Glue a split-off "'s" back to its word, and keep digit runs together.
            glue = word != "'" and previous is not None and (
                previous == "'s" or (text[end - 1].isdigit() and previous[0].isdigit())
            )
            if glue:
                words_reversed[-1] = word + previous
            else:
                words_reversed.append(word)
            end -= length
        return words_reversed[::-1]


def _sub(pattern: str, replacement: str | Callable[[re.Match], str]) -> Callable[[str], str]:
    compiled = re.compile(pattern)
    return lambda text: compiled.sub(replacement, text)


def _collapse_person_tokens(text: str) -> str:
    """`<person>` placeholders (CC12M captions): several in a row become "people".

    Training drew a random synonym for a lone `<person>`; we always use the most
    frequent one, "a person", so that a prompt always gives the same tokens.
    """
    text = re.sub(r"<person>([,\s]*(and)*[,\s]*<person>)+", " people ", text)
    return text.replace("<person>", " a person ")


def _strip_edge_commas(text: str) -> str:
    text = text.strip()
    if text.endswith(","):
        text = text[:-1]
    if text.startswith(","):
        text = text[1:]
    return text.strip()


class TextNormalizer:
    """Cleans a prompt exactly as the training captions were cleaned."""

    def __init__(self, hashtag_splitter: HashtagSplitter):
        split_hashtags = _sub(r"#(\w+)", lambda match: hashtag_splitter(match.group(1)))
        self._rules: list[Callable[[str], str]] = [
            ftfy.fix_text,
            lambda t: html.unescape(html.unescape(t)),
            emoji.demojize,  # before unidecode, which would drop emoji
            unidecode,
            str.lower,
            _collapse_person_tokens,
            _sub(r"\A\s*\[\d+\]", ""),  # wiki references at either end
            _sub(r"\[\d+\]\s*\Z", ""),
            _sub(r"<[^<]+?>", " "),  # html tags
            _sub(r"http\S+", ""),  # urls
            _sub(r"(\d),(\d{3})", r"\1\2"),  # thousands separators, twice for
            _sub(r"(\d),(\d{3})", r"\1\2"),  # overlapping groups such as 1,000,000
            _sub(r"(\w)\.(\w)", rf"\1{_protect('dot')}\2"),
            _sub(r"'(?=([stdm]|(ll)|(re)|(ve))\b)", _protect("quote")),
            _sub(r"(\d)/(\d)", rf"\1{_protect('slash')}\2"),
            _sub(r"(\w)-(\w)", r"\1 \2"),
            _sub(r"([%&/$*])", r" \1 "),
            split_hashtags,
            _sub(r"[_#\\]", " "),
            _sub(r"['\"`]", ' " '),
            _sub(r"[()\[\].,|:;?!=+~\-/{}]", ","),  # punctuation becomes commas
            _sub(_protect("dot"), "."),
            _sub(_protect("quote"), "'"),
            _sub(_protect("slash"), "/"),
            _sub(r"(\D)(\1{3,})", r"\1"),  # 4+ repeats (3 are kept: roman "viii")
            _sub(r'(\s*"+\s*)+', ' " '),
            _sub(r"(\s*,+\s*)+", ", "),
            _sub(r"\s+", " "),
            _strip_edge_commas,
        ]

    @classmethod
    def from_folder(cls, folder: str | Path) -> TextNormalizer:
        path = Path(folder) / WORD_FREQUENCY_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: the text normalizer needs the model folder's "
                f"'{WORD_FREQUENCY_FILE}'. Download the model again, or copy the file "
                "from the hub repo dalle-mini/dalle-mini into the folder."
            )
        return _cached_normalizer(str(path.resolve()))

    def __call__(self, text: str) -> str:
        for rule in self._rules:
            text = rule(text)
        return " " + text


@lru_cache(maxsize=4)
def _cached_normalizer(word_frequency_path: str) -> TextNormalizer:
    return TextNormalizer(HashtagSplitter.from_file(word_frequency_path))
