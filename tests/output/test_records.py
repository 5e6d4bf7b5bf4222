"""ImageRecord and run_key (nbkit/output/records.py): what a run records of each image and each batch."""

import json
from dataclasses import dataclass

import numpy as np
import pytest
from test_storage import SETTINGS, record

from nbkit.output.records import ImageRecord, run_key


def test_record_round_trips_and_is_hashable():
    rec = record("日本 🦄", 3, 2, 7, nbkit_version="9.9")
    again = ImageRecord.from_metadata(json.loads(json.dumps({"file": "x.png", **rec.to_metadata()})))
    assert again == rec and hash(again) == hash(rec) and again.key == rec.key
    assert rec.settings == tuple(sorted(SETTINGS.items()))
    assert rec.to_metadata()["settings"] == SETTINGS
    assert record(settings=dict(reversed(SETTINGS.items()))).key == record().key


def test_record_key_tells_images_apart():
    keys = {record().key, record(seed=43).key, record(image_index=1).key, record(prompt_index=1).key,
            record(prompt="a dog").key, record(settings={**SETTINGS, "top_k": 51}).key,
            ImageRecord("a cat", 0, 0, 42, "dalle-mega", SETTINGS).key}
    assert len(keys) == 7
    assert record(nbkit_version="0.0.1").key == record().key  # a new nbkit may resume an old run


def test_record_accepts_a_settings_dataclass_and_numpy_scalars():
    @dataclass(frozen=True)
    class Settings:
        temperature: float | None = None
        top_k: int | None = 50

    rec = record(settings=Settings(temperature=np.float32(0.5)))
    assert rec.settings == (("temperature", 0.5), ("top_k", 50))
    assert type(rec.settings[0][1]) is float


@pytest.mark.parametrize("kwargs", [dict(seed="../x"), dict(seed=1.5), dict(image_index=-1),
                                    dict(prompt=None),
                                    dict(settings={"top_k": [1, 2]})])
def test_record_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        record(**kwargs)


def test_from_metadata_rejects_other_dicts():
    with pytest.raises(ValueError, match="Not an image record"):
        ImageRecord.from_metadata({"file": "x.png", "prompt": "a cat"})


def test_run_key_depends_on_everything_that_makes_the_images():
    base = (["a cat", "a dog"], 42, 3, "dalle-mini", SETTINGS)
    keys = {run_key(*base), run_key(["a dog", "a cat"], *base[1:]), run_key(base[0], 43, *base[2:]),
            run_key(*base[:2], 4, *base[3:]), run_key(*base[:3], "dalle-mega", SETTINGS),
            run_key(*base[:4], {**SETTINGS, "top_p": 0.9})}
    assert len(keys) == 6
    assert run_key(*base[:4], dict(reversed(SETTINGS.items()))) == run_key(*base)
