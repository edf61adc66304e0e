"""The offline tokenizer of the scenes' captions: one token per word of `VOCABULARY`.

Built with the `tokenizers` library (a WordLevel model, a lowercase normaliser, a whitespace
pre-tokenizer, "$A [EOS]" post-processing) and wrapped as a transformers `PreTrainedTokenizerFast`,
so it is saved with `save_pretrained` and loaded with `AutoTokenizer.from_pretrained` /
`PreTrainedTokenizerFast.from_pretrained` like any pipeline's tokenizer, with no download.

Bad input:
- a word outside the vocabulary (or punctuation) becomes `[UNK]`: no crash;
- a prompt longer than `max_length` tokens (the [EOS] included) is cut to `max_length` when called
  with `truncation=True` (as diffusers pipelines call their tokenizers: `padding="max_length",
  truncation=True, max_length=tokenizer.model_max_length`), its [EOS] kept as the last token;
  transformers logs a warning for an over-long prompt called without truncation. The default
  `max_length` of 16 holds the longest caption the scenes produce (15 words + [EOS]).
- an empty prompt is "[EOS]" then padding.
"""

from __future__ import annotations

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from cachepilot.embedded.scenes.data import MAX_CAPTION_WORDS, VOCABULARY
from cachepilot.errors import InvalidInputError

PAD, UNK, EOS = "[PAD]", "[UNK]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, EOS)  # ids 0, 1, 2; the words follow in VOCABULARY's order
DEFAULT_MAX_LENGTH = MAX_CAPTION_WORDS + 1


def _build_backend() -> Tokenizer:
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *VOCABULARY))}
    backend = Tokenizer(WordLevel(vocab, unk_token=UNK))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, vocab[EOS])]
    )
    return backend


def build_tokenizer(max_length: int = DEFAULT_MAX_LENGTH) -> PreTrainedTokenizerFast:
    """The caption tokenizer: `model_max_length` = `max_length`, right padding with [PAD]."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise InvalidInputError(f"max_length must be an integer >= 2 (a word and [EOS]), got {max_length!r}")
    return PreTrainedTokenizerFast(
        tokenizer_object=_build_backend(),
        pad_token=PAD, unk_token=UNK, eos_token=EOS,
        model_max_length=max_length, padding_side="right", truncation_side="right",
        model_input_names=["input_ids", "attention_mask"],
    )
