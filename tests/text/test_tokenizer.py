import warnings

import numpy as np
import pytest
from conftest import golden_folder, golden_params

from nbkit.models.dallebart import DalleBartConfig
from nbkit.text.tokenizer import PromptTokenizer


def tokenizer_for(folder):
    config = DalleBartConfig.from_folder(folder)
    return PromptTokenizer.from_folder(folder, config.max_text_length, config.normalize_text)


@pytest.mark.golden
@pytest.mark.parametrize("folder", golden_params("dallebart"))
def test_ids_and_masks_match_the_reference_processor(folder):
    expected = np.load(folder / "expected.npz", allow_pickle=True)
    tokenizer = tokenizer_for(folder)
    batch = tokenizer(list(expected["prompts"]))
    for name in ("input_ids", "attention_mask", "input_ids_uncond", "attention_mask_uncond"):
        np.testing.assert_array_equal(getattr(batch, name), expected[name], err_msg=name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some golden prompts are deliberately too long
        everything = tokenizer(list(expected["all_prompts"]))
    np.testing.assert_array_equal(everything.input_ids, expected["all_prompts_input_ids"])
    np.testing.assert_array_equal(everything.attention_mask, expected["all_prompts_attention_mask"])


@pytest.mark.golden
@pytest.mark.parametrize("folder", golden_params("dallebart"))
def test_vocab_and_merges_alone_tokenize_the_same(folder, tmp_path):
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json", "config.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    expected = np.load(folder / "expected.npz", allow_pickle=True)
    config = DalleBartConfig.from_folder(folder)
    tokenizer = PromptTokenizer.from_folder(tmp_path, config.max_text_length, normalize_text=False)
    reference = PromptTokenizer.from_folder(folder, config.max_text_length, normalize_text=False)
    prompts = [" an armchair in the shape of an avocado", " x", " "]
    np.testing.assert_array_equal(tokenizer(prompts).input_ids, reference(prompts).input_ids)
    np.testing.assert_array_equal(tokenizer(prompts).input_ids_uncond[0], expected["input_ids_uncond"][0])


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_for(golden_folder("dallebart"))


def test_shapes_are_fixed_whatever_the_prompt(tokenizer):
    batch = tokenizer(["a", "a red cat on a mat"])
    assert batch.input_ids.shape == batch.attention_mask.shape == (2, tokenizer.max_length)
    assert batch.input_ids_uncond.shape == (2, tokenizer.max_length)
    assert batch.input_ids.dtype == np.int32
    assert batch.attention_mask[0].sum() < batch.attention_mask[1].sum()


def test_truncation_warns_once_per_batch(tokenizer):
    long = "word " * (tokenizer.max_length * 3)
    with pytest.warns(UserWarning, match="longer than") as record:
        batch = tokenizer([long, "short", long])
    assert len([w for w in record if "longer than" in str(w.message)]) == 1
    assert "index 0, 2" in str(record[0].message)
    assert batch.attention_mask[0].all()


def test_blank_prompts_are_kept_as_the_reference_keeps_them(tokenizer):
    batch = tokenizer(["", "   "])
    assert batch.normalized == (" ", " ")
    assert batch.attention_mask.sum(axis=1).tolist() == [3, 3]  # <s>, the space, </s>


@pytest.mark.parametrize("prompts, error, message", [
    ([], ValueError, "empty"),
    ("a cat", TypeError, r"Wrap it in a list"),
    (["a cat", 3], TypeError, "Prompt 1 is a int"),
    ([None], TypeError, "Prompt 0 is a NoneType"),
    (42, TypeError, "Expected a list"),
])
def test_bad_prompt_lists_say_what_to_do(tokenizer, prompts, error, message):
    with pytest.raises(error, match=message):
        tokenizer(prompts)
