import pytest
from conftest import golden_folder, golden_params, read_json

from nbkit.text.normalize import HashtagSplitter, TextNormalizer


@pytest.fixture(scope="module")
def normalizer():
    return TextNormalizer.from_folder(golden_folder("text"))


@pytest.mark.golden
@pytest.mark.parametrize("folder", golden_params("text"))
def test_every_golden_prompt_normalizes_character_for_character(folder):
    normalizer = TextNormalizer.from_folder(folder)
    cases = read_json(folder / "normalize.json")
    assert cases, "the golden file is empty"
    mismatches = [(c["raw"], normalizer(c["raw"]), c["normalized"]) for c in cases
                  if normalizer(c["raw"]) != c["normalized"]]
    assert mismatches == []


def test_hashtags_split_into_the_cheapest_words():
    splitter = HashtagSplitter(["the", "new", "york", "city", "cat", "lover", "s"])
    assert splitter("newyorkcity") == "new york city"
    assert splitter("catlover_2") == "cat lover 2"


def test_person_placeholder_is_deterministic(normalizer):
    assert normalizer("<person> and <person> at the beach") == " people at the beach"
    assert normalizer("<PERSON> reading") == normalizer("<person> reading") == " a person reading"


def test_missing_word_frequency_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="enwiki-words-frequency.txt"):
        TextNormalizer.from_folder(tmp_path)
