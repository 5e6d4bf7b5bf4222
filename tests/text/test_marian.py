"""The opus-mt translator (Marian in Flax, SentencePiece tokenizer, greedy and beam search) against
transformers' own outputs for the tiny folders, and what a translator does with odd prompts."""

import numpy as np
import pytest
from conftest import golden_folder, golden_params

from nbkit.text.marian_search import GenerationConfig, beam_search, greedy_search
from nbkit.text.sentencepiece_tokenizer import MarianTokenizer
from nbkit.text.translate import Translator, pick_translator
from nbkit.weights.checkpoint import CheckpointError
from nbkit.weights.marian_weights import load_marian

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@pytest.mark.golden
@pytest.mark.parametrize("folder", golden_params("marian"))
def test_tokens_match_the_reference(folder):
    expected = np.load(folder / "expected.npz")
    tokenizer = MarianTokenizer(folder)
    batch = tokenizer.encode([str(t) for t in expected["texts"]], int(expected["max_length"]))
    np.testing.assert_array_equal(batch.input_ids, expected["input_ids"])
    np.testing.assert_array_equal(batch.attention_mask, expected["attention_mask"])
    assert [tokenizer.decode(row) for row in expected["decode_ids"]] == list(expected["decode_texts"])


@pytest.mark.golden
@pytest.mark.parametrize("weights", WEIGHT_FILES)
@pytest.mark.parametrize("folder", golden_params("marian"))
def test_states_logits_and_searches_match_the_reference(folder, weights):
    expected = np.load(folder / "expected.npz")
    model, params = load_marian(folder, weights=folder / weights)
    ids, mask = expected["input_ids"], expected["attention_mask"]
    states = model.apply({"params": params}, ids, mask, method=model.encode)
    np.testing.assert_allclose(states, expected["encoder_last_hidden_state"], atol=1e-5, rtol=0)
    logits = model.apply({"params": params}, ids, mask, expected["decoder_input_ids"])
    np.testing.assert_allclose(logits, expected["logits"], atol=1e-4, rtol=0)
    generation = GenerationConfig.from_folder(folder, model.config.pad_token_id)
    assert generation.num_beams == int(expected["num_beams"])
    steps = int(expected["max_new_tokens"])
    greedy = np.asarray(greedy_search(model, params, ids, mask, generation, steps))
    np.testing.assert_array_equal(greedy, expected["greedy_sequences"])
    beams, scores = beam_search(model, params, ids, mask, generation, steps)
    np.testing.assert_array_equal(np.asarray(beams), expected["beam_sequences"])
    np.testing.assert_allclose(scores, expected["beam_sequences_scores"], atol=1e-4, rtol=0)
    tokenizer = MarianTokenizer(folder)
    assert [tokenizer.decode(row) for row in greedy] == list(expected["greedy_texts"])
    assert [tokenizer.decode(row) for row in np.asarray(beams)] == list(expected["beam_texts"])


@pytest.mark.golden
@pytest.mark.parametrize("weights", WEIGHT_FILES)
@pytest.mark.parametrize("folder", golden_params("marian"))
def test_a_corrupted_copy_fails(folder, weights, tmp_path):
    expected = np.load(folder / "expected.npz")
    data = bytearray((folder / weights).read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(255 - b for b in data[middle:middle + 64])
    (tmp_path / weights).write_bytes(bytes(data))
    for name in ("config.json", "generation_config.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    try:
        model, params = load_marian(tmp_path, weights=tmp_path / weights)
    except CheckpointError as error:
        assert "\n" not in str(error)
    else:
        logits = model.apply({"params": params}, expected["input_ids"], expected["attention_mask"],
                             expected["decoder_input_ids"])
        assert not np.allclose(logits, expected["logits"], atol=1e-4, rtol=0)


def test_new_prompts_in_one_bucket_do_not_recompile(count_compilations):
    translator = Translator(golden_folder("marian"), name="translate-test")
    translator.translate(["一只猫", "кошка"])
    with count_compilations() as counter:
        out = translator.translate(["牛油果形状的扶手椅", "宇宙飛行士"])
    assert counter.count == 0
    assert len(out) == 2 and all(t.english for t in out)


def test_a_batch_translates_like_its_prompts_one_by_one():
    translator = Translator(golden_folder("marian"), beam=False)
    texts = ["一只穿着宇航服的猫", "кошка в скафандре", "牛油果形状的扶手椅"]
    together = [t.english for t in translator.translate(texts)]
    assert together == [translator.translate([text])[0].english for text in texts]


def test_a_long_prompt_is_truncated_with_a_warning():
    translator = Translator(golden_folder("marian"), beam=False)
    with pytest.warns(UserWarning, match="longer than the translator takes"):
        translator.translate(["猫" * 200])


def test_a_folder_missing_a_file_says_what_to_do(tmp_path):
    folder = golden_folder("marian")
    for name in ("config.json", "generation_config.json", "model.safetensors", "vocab.json", "source.spm"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    with pytest.raises(FileNotFoundError, match=r"lacks target\.spm.*download"):
        Translator(tmp_path)


@pytest.mark.parametrize("text, model", [
    ("an avocado armchair", None), ("Café à la crème", None), ("🐱🚀", None),
    ("一只穿着宇航服的猫", "translate-zh"), ("宇宙飛行士の猫", "translate-ja"),
    ("우주복을 입은 고양이", "translate-ko"), ("кошка в скафандре", "translate-ru"),
    ("γάτα", "translate-mul"),
    ("an armchair（牛油果形状的扶手椅）", "translate-zh"),
    ("кошка 猫", "translate-mul"),
])
def test_auto_picks_the_model_from_the_script(text, model):
    assert pick_translator(text) == model


def test_an_empty_translation_is_a_clear_error(monkeypatch):
    translator = Translator(golden_folder("marian"), name="translate-test", beam=False)
    monkeypatch.setattr(translator, "token_ids", lambda texts: (None, [""] * len(texts)))
    with pytest.raises(ValueError, match="gave no English for '猫'.*--translate"):
        translator.translate(["猫"])


def test_translate_prompts_batches_per_translator_and_keeps_english(monkeypatch):
    from nbkit.text.translate import translate_prompts

    loaded = []

    def loader(name, cache):
        loaded.append(name)
        return Translator(golden_folder("marian"), name=name, revision="main", beam=False)

    english, negatives, records = translate_prompts(["a red cube", "一只猫", "кошка"], "蓝色", "auto",
                                                    loader=loader)
    assert loaded == ["translate-ru", "translate-zh"]          # each loaded once, English none
    assert english[0] == "a red cube" and records[0]["typed_negative_prompt"] == "蓝色"
    assert records[1]["typed_prompt"] == "一只猫" and records[2]["translator"] == "translate-ru"
    assert all(n == negatives[0] for n in negatives) and negatives[0] != "蓝色"
    assert translate_prompts(["一只猫"], "", "off", loader=loader) == (["一只猫"], [""], [None])


def test_a_registered_translator_downloads_like_every_model_and_fails_offline_in_one_line(
        monkeypatch, tmp_path):
    from hub_server import MockHub, commit_of

    from nbkit.text.translate import load_translator
    from nbkit.weights import hub, registry

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    registered = registry.MODELS["translate-zh"]
    assert registered.revision == "main" and {f.filename for f in registered.files} >= {
        "config.json", "pytorch_model.bin", "generation_config.json", "source.spm", "target.spm",
        "vocab.json"}
    with MockHub({registered.repo: golden_folder("marian")}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        translator = load_translator("translate-zh", tmp_path / "cache")
        assert translator.revision == "main" and translator.translate(["一只猫"])[0].english
        folder = hub.fetch("translate-zh", tmp_path / "cache", progress=False)   # cached: main's commit
        assert folder.name == commit_of(registered.repo) and (folder / "pytorch_model.bin").is_file()
    with pytest.raises(hub.ModelUnavailableError) as error:
        load_translator("translate-ja", tmp_path / "cache")     # the hub is gone now
    assert "\n" not in str(error.value) and "translate-ja" in str(error.value)
    with pytest.raises(ValueError, match="not a translator"):
        load_translator("vqgan", tmp_path / "cache")


def test_the_api_field_translate_builds_the_english_request(tmp_path):
    from nbkit.server.job_input import parse_job
    from nbkit.server.protocol import BadInput, Limits

    limits = Limits(max_images=8, max_prompt_chars=500, codebook_size=16384)
    loaded = []

    def loader(name, cache):
        loaded.append(name)
        return Translator(golden_folder("marian"), name=name, revision="main", beam=False)

    job = parse_job({"prompts": ["一只猫", "a red cube"], "translate": "auto"}, limits)
    request = job.request(tmp_path, loader=loader)
    assert loaded == ["translate-zh"] and request.prompts[1] == "a red cube"
    assert request.prompts[0] != "一只猫"
    assert request.translations[0] == {"typed_prompt": "一只猫", "translator": "translate-zh",
                                       "translator_revision": "main"} and request.translations[1] is None
    assert parse_job({"prompts": ["一只猫"]}, limits).translate == "off"      # the API's default
    assert parse_job({"prompts": ["一只猫"]}, limits).request(tmp_path).prompts == ("一只猫",)
    for wrong in ("/etc", "vqgan", 3):
        with pytest.raises(BadInput, match="translate must be off, auto or one of"):
            parse_job({"prompts": ["猫"], "translate": wrong}, limits)


def test_the_english_a_person_checked_is_drawn_and_the_record_says_what_the_translator_gave(tmp_path):
    from nbkit.server.job_input import parse_job, parse_translate
    from nbkit.server.protocol import BadInput, Limits
    from nbkit.text.translate import use_edited_english

    limits = Limits(max_images=8, max_prompt_chars=500, codebook_size=16384)
    loader = lambda name, cache: Translator(golden_folder("marian"), name=name, revision="main", beam=False)
    machine = loader("translate-zh", None).translate(["一只猫", "雾"])
    body = {"prompts": ["一只猫", "a red cube"], "negative_prompt": "雾", "translate": "auto"}
    request = parse_job({**body, "english_prompts": ["a cat", "a red cube"],
                         "english_negative_prompt": "fog"}, limits).request(tmp_path, loader=loader)
    assert request.prompts == ("a cat", "a red cube") and request.negative_prompt == ("fog", "fog")
    assert request.translations[0] == {
        "typed_prompt": "一只猫", "translator": "translate-zh", "translator_revision": "main",
        "typed_negative_prompt": "雾", "english_edited": "yes", "translator_english": machine[0].english,
        "translator_negative_english": machine[1].english}
    assert request.translations[1]["typed_prompt"] == "a red cube"          # only its negative was edited
    assert "translator_english" not in request.translations[1]
    unedited = parse_job({**body, "english_prompts": [machine[0].english, "a red cube"]},
                         limits).request(tmp_path, loader=loader)
    assert "english_edited" not in unedited.translations[0] and unedited.prompts[0] == machine[0].english
    assert parse_translate({"prompt": "猫"}, limits).translate == "auto"          # the route's default
    with pytest.raises(BadInput, match="goes with translate"):
        parse_job({"prompts": ["猫"], "english_negative_prompt": "fog"}, limits)
    with pytest.raises(ValueError, match="2 line"):
        use_edited_english(["猫"], "", (["cat"], [""], [None]), ["a", "b"])
    typed = use_edited_english(["a cube"], "", (["a cube"], [""], [None]), ["a red cube"])[2][0]
    assert typed == {"typed_prompt": "a cube", "translator": "", "translator_revision": "",
                     "english_edited": "yes", "translator_english": "a cube"}
