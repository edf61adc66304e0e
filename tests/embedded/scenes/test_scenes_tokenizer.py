import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from cachepilot.embedded.scenes.data import MAX_CAPTION_WORDS, VOCABULARY, sample_attributes
from cachepilot.embedded.scenes.tokenizer import EOS, PAD, UNK, build_tokenizer
from cachepilot.errors import InvalidInputError

PROMPTS = ["a small red circle", "a large blue square above a small yellow cross",
           "a red circle left of a green triangle and a white square", "A Purple Dog!", ""]


def _encode(tokenizer, prompts):
    return tokenizer(prompts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length)


def test_every_word_is_one_known_token():
    tokenizer = build_tokenizer()
    assert tokenizer.model_max_length == MAX_CAPTION_WORDS + 1
    for word in VOCABULARY:
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != tokenizer.unk_token_id
    assert len(tokenizer) == len(VOCABULARY) + 3


def test_unknown_words_become_unk_and_longest_caption_fits():
    tokenizer = build_tokenizer()
    ids = tokenizer("a purple dog")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["a", "purple", UNK, EOS]
    longest = max((s.caption for s in sample_attributes(300, 0, split="all")), key=lambda c: len(c.split()))
    encoded = _encode(tokenizer, [longest])
    assert UNK not in tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    assert sum(encoded["attention_mask"][0]) == len(longest.split()) + 1
    empty = _encode(tokenizer, [""])["input_ids"][0]
    assert tokenizer.convert_ids_to_tokens(empty)[:2] == [EOS, PAD]


def test_over_long_prompts_are_truncated_keeping_eos():
    tokenizer = build_tokenizer(max_length=8)
    ids = _encode(tokenizer, [" ".join(["a red circle and"] * 5) + " a red circle"])["input_ids"][0]
    assert len(ids) == 8 and tokenizer.convert_ids_to_tokens(ids)[-1] == EOS
    with pytest.raises(InvalidInputError):
        build_tokenizer(max_length=1)


def test_round_trip_through_save_pretrained(tmp_path):
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    expected = _encode(tokenizer, PROMPTS)
    for loaded in (AutoTokenizer.from_pretrained(tmp_path), PreTrainedTokenizerFast.from_pretrained(tmp_path)):
        assert loaded.model_max_length == tokenizer.model_max_length
        assert (loaded.pad_token, loaded.unk_token, loaded.eos_token) == (PAD, UNK, EOS)
        got = _encode(loaded, PROMPTS)
        assert got["input_ids"] == expected["input_ids"]
        assert got["attention_mask"] == expected["attention_mask"]
