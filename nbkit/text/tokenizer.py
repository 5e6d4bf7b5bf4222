"""Prompts → fixed-length token ids for the DalleBart encoder (BART byte-level BPE).

Every prompt is padded or truncated to the model's `max_text_length`, so the encoder
always sees one shape and never recompiles. The empty prompt's ids drive
super-conditioning (the "unconditional" half of each batch).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

from nbkit.models.config import read_json
from nbkit.text.normalize import TextNormalizer

SPECIAL_TOKENS_FILE = "special_tokens_map.json"
_DEFAULT_SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}


@dataclass(frozen=True)
class TokenizedPrompts:
    """Encoder inputs for a batch: conditioned rows and their unconditional twins."""

    input_ids: np.ndarray  # (batch, max_text_length) int32
    attention_mask: np.ndarray  # (batch, max_text_length) int32, 1 = real token
    input_ids_uncond: np.ndarray
    attention_mask_uncond: np.ndarray
    normalized: tuple[str, ...]  # the text the model actually read

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def lone_surrogate(text: str) -> int | None:
    """Where `text` holds a lone surrogate (None: nowhere): not a character, and not UTF-8, so nothing
    holding it can be saved or sent as JSON. Text cut from a longer one, or bytes that were not UTF-8
    (Python reads those from a command line as \\udc80–\\udcff), leave them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return error.start
    return None


def check_text(text: str, what: str) -> str:
    """`text` if it is UTF-8 text; a ValueError naming `what` and the position if not."""
    position = lone_surrogate(text)
    if position is not None:
        raise ValueError(f"{what} holds {text[position]!r} at character {position}, which is not a "
                         "character (a lone surrogate, or bytes that were not UTF-8): type it again.")
    return text


def check_prompts(prompts: object) -> list[str]:
    """Returns the prompts as a list, or raises an error that says how to call us."""
    if isinstance(prompts, str):
        raise TypeError(
            f"Expected a list of prompts but got the string {prompts!r}. "
            f"Wrap it in a list: [{prompts!r}]."
        )
    if not isinstance(prompts, Sequence):
        raise TypeError(f"Expected a list of prompts (strings), got {type(prompts).__name__}.")
    if len(prompts) == 0:
        raise ValueError("The prompt list is empty: give at least one prompt, e.g. ['a red apple'].")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(
                f"Prompt {index} is a {type(prompt).__name__} ({prompt!r}); every prompt must be a string."
            )
        check_text(prompt, f"Prompt {index}")
    return list(prompts)


def _load_special_tokens(folder: Path) -> dict[str, str]:
    path = folder / SPECIAL_TOKENS_FILE
    tokens = dict(_DEFAULT_SPECIAL_TOKENS)
    if path.is_file():
        for name, value in read_json(path, "it names the special tokens").items():
            tokens[name] = value["content"] if isinstance(value, dict) else value
    return tokens


def _load_bpe(folder: Path, special: dict[str, str]) -> Tokenizer:
    """tokenizer.json when present; otherwise rebuilt from vocab.json + merges.txt."""
    if (folder / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(folder / "tokenizer.json"))
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        raise FileNotFoundError(
            f"No tokenizer in {folder}: expected 'tokenizer.json', or 'vocab.json' and "
            "'merges.txt'. Download the model folder again."
        )
    tokenizer = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    bos, eos = special["bos_token"], special["eos_token"]
    tokenizer.post_processor = processors.RobertaProcessing(
        (eos, tokenizer.token_to_id(eos)), (bos, tokenizer.token_to_id(bos)),
        trim_offsets=True, add_prefix_space=False,
    )
    return tokenizer


class FixedLengthEncoder:
    """A `tokenizers` BPE that always returns `length` ids (padded or cut), so that the
    model sees one shape and compiles once."""

    def __init__(self, tokenizer: Tokenizer, pad_token: str, length: int):
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"The tokenizer's vocabulary has no padding token {pad_token!r}.")
        tokenizer = Tokenizer.from_str(tokenizer.to_str())  # our own copy to configure
        tokenizer.enable_truncation(max_length=length)
        tokenizer.enable_padding(length=length, pad_id=pad_id, pad_token=pad_token)
        self._tokenizer = tokenizer
        self.length = length

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, attention mask), each (len(texts), length) int32. Warns once if any text was cut."""
        encodings = self._tokenizer.encode_batch(texts)
        truncated = [i for i, encoding in enumerate(encodings) if encoding.overflowing]
        if truncated:
            warnings.warn(
                f"{len(truncated)} prompt(s) (index {', '.join(map(str, truncated))}) are longer "
                f"than the model's {self.length} text tokens and were cut; the model only "
                "reads the beginning. Shorten them to control what is kept.",
                UserWarning,
                stacklevel=3,
            )
        ids = np.array([encoding.ids for encoding in encodings], dtype=np.int32)
        mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int32)
        return ids, mask

    def cut(self, texts: list[str]) -> list[int]:
        """The indexes of the texts longer than `length` tokens (what encoding them would cut)."""
        return [i for i, encoding in enumerate(self._tokenizer.encode_batch(texts)) if encoding.overflowing]


class PromptTokenizer:
    """Normalizes (when the model was trained on normalized text) and tokenizes prompts."""

    def __init__(self, tokenizer: Tokenizer, pad_token: str, max_length: int,
                 normalizer: TextNormalizer | None):
        self._encode = FixedLengthEncoder(tokenizer, pad_token, max_length)
        self.max_length = max_length
        self.normalizer = normalizer
        self._uncond_ids, self._uncond_mask = self._encode([""])

    @classmethod
    def from_folder(cls, folder: str | Path, max_length: int | None = None,
                    normalize_text: bool | None = None) -> PromptTokenizer:
        """The tokenizer of a model folder; length and normalization default to its config.json."""
        folder = Path(folder)
        if max_length is None or normalize_text is None:
            config = read_json(folder / "config.json", "it says how long prompts may be")
            max_length = config.get("max_text_length", 64) if max_length is None else max_length
            normalize_text = config.get("normalize_text", False) if normalize_text is None else normalize_text
        special = _load_special_tokens(folder)
        normalizer = TextNormalizer.from_folder(folder) if normalize_text else None
        return cls(_load_bpe(folder, special), special["pad_token"], max_length, normalizer)

    def __call__(self, prompts: Sequence[str],
                 negative_prompts: Sequence[str] | None = None) -> TokenizedPrompts:
        """`negative_prompts` (one per prompt) take the empty prompt's place in the unconditioned rows
        of super-conditioning; an empty one is exactly the empty prompt."""
        prompts = check_prompts(prompts)
        ids, mask = self._encode(self._normalize(prompts))
        repeat = (len(prompts), 1)
        ids_uncond, mask_uncond = np.tile(self._uncond_ids, repeat), np.tile(self._uncond_mask, repeat)
        if negative_prompts is not None:
            if len(negative_prompts) != len(prompts):
                raise ValueError(f"Got {len(negative_prompts)} negative prompts for {len(prompts)} prompts: "
                                 "give one per prompt.")
            given = [i for i, text in enumerate(negative_prompts) if text]
            if given:
                texts = self._normalize(check_prompts([negative_prompts[i] for i in given]))
                ids_uncond[given], mask_uncond[given] = self._encode(texts)
        return TokenizedPrompts(
            input_ids=ids,
            attention_mask=mask,
            input_ids_uncond=ids_uncond,
            attention_mask_uncond=mask_uncond,
            normalized=tuple(self._normalize(prompts)) if self.normalizer else tuple(prompts),
        )

    def cut(self, texts: Sequence[str]) -> list[str]:
        """The texts (prompts or negative prompts, blanks skipped) that are longer than the model reads,
        each once, in order: what the person who typed them is told."""
        distinct = list(dict.fromkeys(text for text in texts if text))
        return [distinct[i] for i in self._encode.cut(self._normalize(distinct))] if distinct else []

    def _normalize(self, texts: list[str]) -> list[str]:
        return [self.normalizer(text) for text in texts] if self.normalizer else texts


class CLIPTokenizer:
    """Texts → (ids, mask) padded to the model's text length, from the folder's tokenizer.json."""

    def __init__(self, encoder: FixedLengthEncoder):
        self._encode = encoder

    @classmethod
    def from_folder(cls, folder: str | Path, length: int = 77) -> CLIPTokenizer:
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the CLIP tokenizer needs it. "
                                    f"Download the model folder again.")
        pad = "<|endoftext|>"
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            if (folder / name).is_file():
                value = read_json(folder / name, "it names the padding token").get("pad_token", pad)
                pad = value["content"] if isinstance(value, dict) else value
                break
        return cls(FixedLengthEncoder(Tokenizer.from_file(str(path)), pad, length))

    def __call__(self, texts) -> tuple[np.ndarray, np.ndarray]:
        return self._encode(check_prompts(texts))
