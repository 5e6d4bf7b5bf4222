"""The job specs: each checked once when made, each turning itself into its request; translation where the
spec is built (a stand-in translator: no model is loaded)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nbkit.generation.from_image import Extend, Fill, SourceImage, Vary
from nbkit.generation.sampling import SamplingSettings
from nbkit.generation.specs import Generate

SOURCE = SourceImage(np.arange(256, dtype=np.int32) % 64, "a red cube", name="cube.png")


class FakeTranslator:
    """What `translate_prompts` calls: `translate(texts)` → objects with `english`, and its names."""

    translator, revision = "translate-zh", "main"

    def translate(self, texts):
        return [type("Done", (), {"english": f"english of {text}", "translator": self.translator,
                                  "revision": self.revision})() for text in texts]


def load(name, cache):
    return FakeTranslator()


def test_generate_is_checked_when_made_and_draws_its_seed_in_the_request():
    spec = Generate(prompts=["a red cube", "a blue sphere"], n_images=2, negative_prompt="fog")
    assert spec.prompts == ("a red cube", "a blue sphere") and spec.negative_prompt == ("fog", "fog")
    assert spec.seed is None and spec.texts == ["a red cube", "a blue sphere", "fog", "fog"]
    first, second = spec.request(), spec.request()
    assert first.images == [(0, 0), (0, 1), (1, 0), (1, 1)] and first.negative_prompt == ("fog", "fog")
    assert 0 <= first.seed < 2**32 and isinstance(second.seed, int)
    assert Generate(prompts=["x"], seed=7).request().seed == 7
    for wrong, message in [({"n_images": 0}, "n_images must be a whole number"),
                           ({"seed": -1}, "seed must be a whole number"),
                           ({"seed": 2**32}, "seed must be a whole number"),
                           ({"negative_prompt": ["a", "b"]}, "negative_prompt must be one text")]:
        with pytest.raises(ValueError, match=message):
            Generate(prompts=["x"], **wrong)
    with pytest.raises(TypeError, match="settings must be a SamplingSettings"):
        Generate(prompts=["x"], settings={"temperature": 1.0})
    with pytest.raises(ValueError, match="takes no source image"):
        spec.request(SOURCE)


def test_an_edit_needs_its_source_and_records_it():
    spec = Vary(keep_rows=5, n_images=2, seed=3, negative_prompt="fog")
    assert Vary.needs_source and not Generate.needs_source
    with pytest.raises(ValueError, match="An edit starts from an image"):
        spec.request()
    request = spec.request(SOURCE)
    assert request.prompts == ("a red cube",) and request.seed == 3 and request.n_images == 2
    assert request.source == {"file": "cube.png", "tokens_sha256": SOURCE.tokens_sha256, "encoded": False,
                              "edit": "vary", "keep_rows": 5}
    assert int(request.kept[0].mask.sum()) == 5 * 16
    with pytest.raises(ValueError, match="region is"):
        Fill(region=(1, 2, 3))
    with pytest.raises(ValueError, match="n_images must be a whole number"):
        Fill(region=(0, 0, 4, 4), n_images=0)


def test_an_extension_chain_is_one_request_of_pieces_each_extending_the_one_before():
    chain_spec = Extend(direction="right", rows=4, times=3, seed=5)
    chain = chain_spec.request(SOURCE)
    assert chain.n_images == 3 and chain.seed == 5 and chain.images == [(0, 0), (0, 1), (0, 2)]
    piece = chain_spec.piece(chain, SOURCE, 2)
    assert sorted(piece.only) == [(0, 2)] and piece.seed == 5 and piece.n_images == 3
    grid = SOURCE.tokens.reshape(16, 16)
    assert piece.kept[0].tokens.reshape(16, 16)[:, :12].tolist() == grid[:, 4:].tolist()
    with pytest.raises(ValueError, match="one piece at a time"):
        Extend(times=2, n_images=2)
    with pytest.raises(ValueError, match="times must be a whole number"):
        Extend(times=0)


def test_translation_is_where_the_spec_is_and_records_what_was_typed():
    spec = Generate(prompts=["一只猫", "a red cube"], negative_prompt="雾", n_images=1, seed=2,
                    settings=SamplingSettings(temperature=0.5))
    assert spec.translated("off") is spec
    english = spec.translated("auto", loader=load)
    assert english.prompts == ("english of 一只猫", "a red cube") and english.seed == 2
    assert english.negative_prompt == ("english of 雾", "english of 雾")
    assert english.translations[0] == {"typed_prompt": "一只猫", "translator": "translate-zh",
                                       "translator_revision": "main", "typed_negative_prompt": "雾"}
    assert english.request().translations == english.translations
    checked = spec.with_english(english, ["a cat", "a red cube"], "fog")
    assert checked.prompts == ("a cat", "a red cube") and checked.negative_prompt == ("fog", "fog")
    assert checked.translations[0]["english_edited"] == "yes"
    assert checked.translations[0]["translator_english"] == "english of 一只猫"
    edit = Vary(prompt="一只猫", negative_prompt="雾").translated("auto", loader=load)
    assert edit.prompt == "english of 一只猫" and edit.translation["typed_prompt"] == "一只猫"
    only_negative = Vary(negative_prompt="雾").translated("auto", loader=load)
    assert only_negative.prompt is None and "typed_prompt" not in only_negative.translation
    assert dataclasses.replace(only_negative, seed=1).request(SOURCE).translations[0]["typed_prompt"] == \
        "a red cube"
