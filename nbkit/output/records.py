"""What a run records: `ImageRecord` (what produced one image, in its PNG and its manifest line) and
`run_key` (what identifies a batch, in run.json), and the checks a reader applies to records read back
from files (`entry_problem`, `info_problem`): PNG metadata and manifests are untrusted, so each bound
here is far above any run and small enough that nothing built from a record can take long or much memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nbkit import __version__
from nbkit.arguments import DTYPES, WEIGHT_STORAGES
from nbkit.generation.request import TRANSLATION_KEYS, TRANSLATION_TEXT_LIMIT

UPSCALED_FROM = "upscaled_from"      # the key of an upscaled image's source, in its PNG and manifest entry
INDEX_LIMIT = 2**20          # prompt and image indexes
TOKENS_LIMIT = 2**16         # image tokens recorded with one image
BATCH_LIMIT = 1024           # the rows of the batch an image was drawn in (reproduce pads to that many)


def _settings_items(settings: Any) -> tuple[tuple[str, Any], ...]:
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        settings = dataclasses.asdict(settings)  # e.g. a SamplingSettings
    items = settings.items() if isinstance(settings, Mapping) else settings
    out = []
    for key, value in items:
        value = value.item() if isinstance(value, np.generic) else value
        if not isinstance(key, str) or not (value is None or isinstance(value, (bool, int, float, str))):
            raise ValueError(f"Setting {key!r}={value!r}: settings map names to numbers, strings or None.")
        out.append((key, value))
    return tuple(sorted(out, key=lambda item: item[0]))


def run_key(prompts: Sequence[str], seed: int, n_images: int, model: str, settings: Any,
            negative_prompts: Sequence[str] = (), kept: Sequence[str | None] = ()) -> str:
    """Identifies a batch: the same prompts, seed, count, model, settings, negative prompts and kept
    tokens (a hash per prompt, or None) give the same key (empty negative prompts and nothing kept leave
    it as it was before they existed)."""
    batch = {"prompts": list(prompts), "seed": seed, "n_images": n_images, "model": model,
             "settings": dict(_settings_items(settings))}
    if any(negative_prompts):
        batch["negative_prompts"] = list(negative_prompts)
    if any(kept):
        batch["kept"] = list(kept)
    return hashlib.sha256(json.dumps(batch, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ImageRecord:
    """What produced one image: enough to find it again when a run is resumed, and to make it again.

    `tokens` are the image's identity: the same request gives the same 256 tokens on any device
    count (pixels may differ by one level where the VQGAN's float sums run in another order).
    They depend on the PRNG implementation, so the jax version and its `jax_threefry_partitionable`
    setting are recorded with them.
    """

    prompt: str
    prompt_index: int  # position of the prompt in the batch
    image_index: int  # which image of that prompt
    seed: int
    model: str
    settings: tuple[tuple[str, Any], ...] = ()  # given as a mapping (or dataclass); kept as sorted pairs
    nbkit_version: str = __version__
    tokens: tuple[int, ...] = ()  # the image tokens (256 for the published models)
    jax_version: str | None = None
    jax_threefry_partitionable: bool | None = None
    negative_prompt: str = ""
    kept_mask: str = ""          # positions kept rather than drawn (hex, raster order); "" for none
    source: Mapping[str, Any] | None = None   # what the image started from (file, tokens_sha256, edit…)
    kept_logprob: float | None = None         # how likely the model found the kept tokens after a hole
    replica: str = ""                         # the server replica that made it ("" in this process)
    translation: Mapping[str, str] | None = None   # typed prompt, translator, revision (nbkit.text.translate)
    # The batch it was drawn in: its rows (padding included) and the image's row. In bfloat16 and float16
    # a product's last bits depend on its shape, so `reproduce` draws it again in that shape; None: a PNG
    # saved before nbkit recorded it (drawn alone again, the float32 contract).
    batch_size: int | None = None
    batch_row: int | None = None
    dtype: str | None = None     # the compute dtype it was drawn in: `reproduce` uses it unless told another
    # How DALL·E's weights were kept (float32, bfloat16, int8: nbkit.weights.stored); the narrower ones
    # draw other tokens, so `reproduce` loads the same. None: a PNG saved before nbkit recorded it (float32).
    weight_storage: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "settings", _settings_items(self.settings))
        if self.batch_size is not None or self.batch_row is not None:
            size, row = self.batch_size, self.batch_row
            if not (_whole(size, 1, BATCH_LIMIT + 1) and _whole(row, 0, size)):
                raise ValueError(f"batch_size must be a whole number from 1 to {BATCH_LIMIT} and batch_row "
                                 f"one below it (got {size!r} and {row!r}).")
        if self.dtype not in (None, *DTYPES):
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}.")
        if self.weight_storage not in (None, *WEIGHT_STORAGES):
            raise ValueError(f"weight_storage must be one of {', '.join(WEIGHT_STORAGES)}, got "
                             f"{self.weight_storage!r}.")
        if not isinstance(self.tokens, (list, tuple)) or len(self.tokens) > TOKENS_LIMIT:
            raise ValueError(f"tokens must be a list of at most {TOKENS_LIMIT} image codes.")
        object.__setattr__(self, "tokens", tuple(int(token) for token in self.tokens))
        for name in ("prompt_index", "image_index", "seed"):
            value = getattr(self, name)
            whole = not isinstance(value, bool) and isinstance(value, (int, np.integer))
            if not whole or (name != "seed" and not 0 <= value < INDEX_LIMIT):
                bounds = "" if name == "seed" else f" in [0, {INDEX_LIMIT})"
                raise ValueError(f"{name} must be a whole number{bounds}, got {value!r}.")
            object.__setattr__(self, name, int(value))
        if self.translation is not None:
            known = TRANSLATION_KEYS
            if not isinstance(self.translation, Mapping) or not all(
                    key in known and isinstance(value, str) and len(value) <= TRANSLATION_TEXT_LIMIT
                    for key, value in self.translation.items()):
                raise ValueError(f"translation must map {', '.join(known)} to strings, got "
                                 f"{self.translation!r}.")
            object.__setattr__(self, "translation", dict(self.translation))
        if not isinstance(self.replica, str):
            raise ValueError(f"replica must be a string, got {self.replica!r}.")
        if not isinstance(self.prompt, str) or not isinstance(self.model, str):
            raise ValueError(f"prompt and model must be strings, got {self.prompt!r} and {self.model!r}.")

    @property
    def storage(self) -> str:
        """How the weights were kept when it was drawn (float32 for a PNG older than the record of it)."""
        return self.weight_storage or "float32"

    @property
    def key(self) -> tuple:
        # prompt_index is part of it: a prompt given twice in one batch makes two sets of images.
        return (self.prompt, self.prompt_index, self.seed, self.image_index, self.model, self.settings)

    def to_metadata(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "prompt_index": self.prompt_index, "image_index": self.image_index,
                "seed": self.seed, "model": self.model, "settings": dict(self.settings),
                "nbkit_version": self.nbkit_version, "tokens": list(self.tokens),
                "jax_version": self.jax_version,
                "jax_threefry_partitionable": self.jax_threefry_partitionable,
                "negative_prompt": self.negative_prompt,
                **({"kept_mask": self.kept_mask, "source": dict(self.source or {}),
                    "kept_logprob": self.kept_logprob} if self.kept_mask else {}),
                **({"replica": self.replica} if self.replica else {}),
                **({"translation": dict(self.translation)} if self.translation else {}),
                **({"batch_size": self.batch_size, "batch_row": self.batch_row}
                   if self.batch_size is not None else {}),
                **({"dtype": self.dtype} if self.dtype is not None else {}),
                **({"weight_storage": self.weight_storage} if self.weight_storage is not None else {})}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ImageRecord:
        try:
            return cls(**{f.name: metadata[f.name] for f in dataclasses.fields(cls) if f.name in metadata})
        except TypeError as error:
            raise ValueError(f"Not an image record: {error!r} in {dict(metadata)!r}.") from error


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < high


def entry_problem(entry: Any) -> str | None:
    """What is wrong with a manifest entry as readers take it (None: nothing): a file name, and for an
    image made from tokens its prompt (text), prompt and image index (whole numbers) and seed. Manifests
    are untrusted (a crash, an edit): readers skip or refuse what this names instead of failing on it."""
    if not isinstance(entry, Mapping):
        return "it is not a JSON object"
    if not isinstance(entry.get("file"), str):
        return f"its file is {entry.get('file')!r}, not a file name"
    if UPSCALED_FROM in entry:
        return None if isinstance(entry[UPSCALED_FROM], Mapping) else f"its {UPSCALED_FROM} is not an object"
    if not isinstance(entry.get("prompt"), str):
        return f"its prompt is {type(entry.get('prompt')).__name__}, not text"
    for name in ("prompt_index", "image_index"):
        if not _whole(entry.get(name), 0, INDEX_LIMIT):
            return f"its {name} is {entry.get(name)!r}, not a whole number from 0 to {INDEX_LIMIT - 1}"
    if "seed" in entry and not _whole(entry["seed"], -2**63, 2**64):
        return f"its seed is {entry['seed']!r}, not a whole number"
    tokens = entry.get("tokens", [])
    if not isinstance(tokens, list) or len(tokens) > TOKENS_LIMIT:
        return "its tokens are not a list of image codes"
    return None


def info_problem(info: Any) -> str | None:
    """What is wrong with a run.json's contents as readers take them (None: nothing)."""
    if not isinstance(info, Mapping):
        return "it is not a JSON object"
    prompts = info.get("prompts", [])
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        return "its prompts are not a list of texts"
    for name in ("run_key", "created"):
        if info.get(name) is not None and not isinstance(info.get(name), str):
            return f"its {name} is {type(info.get(name)).__name__}, not text"
    expected = info.get("expected_images")
    if expected is not None and not _whole(expected, 0, INDEX_LIMIT):
        return f"its expected_images is {expected!r}, not a whole number"
    return None
