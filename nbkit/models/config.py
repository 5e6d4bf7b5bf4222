"""Reading a model folder's JSON files into the small frozen config dataclasses of the architectures."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"


def read_json(path: str | Path, needed_for: str) -> dict:
    """A model folder's JSON file (config.json, ...), or an error naming it and what it is for."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {needed_for}. Download the model folder again.")
    try:
        return json.loads(path.read_text(encoding="utf8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); download the model folder again.") from None


def config_from_dict(cls, values: Mapping[str, Any]):
    """A config dataclass from a config.json's values; fields it does not know are ignored."""
    known = {field.name for field in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in values.items() if key in known})
