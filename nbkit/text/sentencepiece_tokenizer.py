"""The opus-mt tokenizer: SentencePiece pieces looked up in the checkpoint's vocab.json.

source text → `source.spm` pieces → `vocab.json` ids (a missing piece → `<unk>`) → `</s>`;
target ids → `target_vocab.json` (or the shared `vocab.json`) pieces → `target.spm` text. The
`sentencepiece` package does the segmentation; the id lookup is the checkpoint's own table, which
is not aligned with the .spm ids, so it is done here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_LANGUAGE_CODE = re.compile(r"^>>.+?<<\s*")
REQUIRED_FILES = ("source.spm", "target.spm", "vocab.json")


def _read_vocab(path: Path) -> dict[str, int]:
    if path.stat().st_size > 64 << 20:
        raise ValueError(f"{path} is over 64 MiB: not an opus-mt vocabulary. Download the translator again.")
    try:
        vocab = json.loads(path.read_text(encoding="utf8", errors="surrogatepass"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); download the translator again.") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise ValueError(f"{path} is not a piece → id table; download the translator again.")
    return vocab


@dataclass(frozen=True)
class Batch:
    input_ids: np.ndarray        # (batch, length) int32, padded right with <pad>
    attention_mask: np.ndarray   # (batch, length) int32
    truncated: tuple[bool, ...]  # which prompts lost pieces to max_length


class MarianTokenizer:
    """Encodes source prompts and decodes generated target ids, as MarianTokenizer does."""

    def __init__(self, folder: str | Path):
        import sentencepiece

        folder = Path(folder)
        missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"The translator folder {folder} lacks {', '.join(missing)}: download it "
                                    "again (nbkit download translate-...).")
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf8")) if config_path.is_file() else {}
        self.source_vocab = _read_vocab(folder / "vocab.json")
        separate = bool(config.get("separate_vocabs")) and (folder / "target_vocab.json").is_file()
        target_vocab = _read_vocab(folder / "target_vocab.json") if separate else self.source_vocab
        self.target_pieces = {index: piece for piece, index in target_vocab.items()}
        self.source_spm = sentencepiece.SentencePieceProcessor(model_file=str(folder / "source.spm"))
        self.target_spm = sentencepiece.SentencePieceProcessor(model_file=str(folder / "target.spm"))
        self.eos_id = self.source_vocab.get("</s>", 0)
        self.unk_id = self.source_vocab.get("<unk>", 1)
        self.pad_id = self.source_vocab["<pad>"]
        self.special_ids = {target_vocab.get("</s>", 0), target_vocab.get("<unk>", 1), target_vocab["<pad>"]}

    def source_ids(self, text: str) -> list[int]:
        """One prompt's ids, `</s>` included, untruncated."""
        text = _LANGUAGE_CODE.sub("", text)
        pieces = self.source_spm.encode(text, out_type=str)
        return [self.source_vocab.get(piece, self.unk_id) for piece in pieces] + [self.eos_id]

    def encode(self, texts: list[str], max_length: int, pad_to: int | None = None) -> Batch:
        """Prompts → a right-padded batch; pieces beyond `max_length` - 1 are cut before `</s>`."""
        rows, truncated = [], []
        for text in texts:
            ids = self.source_ids(text)
            truncated.append(len(ids) > max_length)
            rows.append(ids[: max_length - 1] + [self.eos_id] if len(ids) > max_length else ids)
        width = max(pad_to or 0, max(len(row) for row in rows))
        input_ids = np.full((len(rows), width), self.pad_id, np.int32)
        mask = np.zeros((len(rows), width), np.int32)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)], mask[i, : len(row)] = row, 1
        return Batch(input_ids, mask, tuple(truncated))

    def decode(self, ids) -> str:
        """Target ids → text, special tokens (`</s>`, `<pad>`, `<unk>`) dropped."""
        pieces = [self.target_pieces[int(i)] for i in ids
                  if int(i) not in self.special_ids and int(i) in self.target_pieces]
        return self.target_spm.decode_pieces(pieces).strip() if pieces else ""
