"""Teacher and student must speak the same tokenizer; their output layers may still differ in size.

Qwen2.5 32B/72B have 152,064 output rows and 0.5B/1.5B/3B have 151,936, over one tokenizer of 151,665
entries: the extra rows are padding no text ever maps to. Distributions are therefore compared over
the tokenizer's ids only, after checking both sides use the very same tokenizer.
"""
import hashlib
import json
from pathlib import Path

import transformers

# Encoded as part of a tokenizer's fingerprint: two tokenizers with one vocabulary but other rules (a
# pre-tokenizer, normaliser or byte fallback) split it differently.
PROBE = "日本語の文章、ｶﾀｶﾅと全角ＡＢＣ、English words 123 🍣\n  <|im_start|>user\n東京<|im_end|>"


class TokenizerMismatchError(ValueError):
    pass


def load_tokenizer(source):
    """The tokenizer at ``source``, of the class its tokenizer_config.json names. transformers 5's
    AutoTokenizer goes by the model's config.json instead: a SentencePiece tokenizer saved beside a qwen2
    model comes back as a Qwen2Tokenizer that encodes Japanese text to nothing."""
    config = Path(source) / "tokenizer_config.json"
    named = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class") if config.is_file() else None
    tokenizer_class = None
    if named:  # "LlamaTokenizerFast" in files saved by transformers 4
        tokenizer_class = getattr(transformers, named, None) or getattr(transformers, named.removesuffix("Fast"), None)
    return (tokenizer_class or transformers.AutoTokenizer).from_pretrained(source)


def tokenizer_fingerprint(tokenizer):
    """A hash of everything that decides token ids: the vocabulary, the special tokens and how a probe
    text is split."""
    payload = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": sorted((str(k), str(v)) for k, v in tokenizer.special_tokens_map.items()),
        "probe": tokenizer.encode(PROBE, add_special_tokens=False),
    }
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def check_same_tokenizer(teacher_tokenizer, student_tokenizer, teacher_name, student_name):
    teacher_hash = tokenizer_fingerprint(teacher_tokenizer)
    student_hash = tokenizer_fingerprint(student_tokenizer)
    if teacher_hash != student_hash:
        raise TokenizerMismatchError(
            f"teacher tokenizer ({teacher_name}, {len(teacher_tokenizer)} entries, sha256 {teacher_hash[:12]}) "
            f"differs from the student tokenizer ({student_name}, {len(student_tokenizer)} entries, "
            f"sha256 {student_hash[:12]}); distillation compares distributions id by id and needs one tokenizer"
        )


def shared_vocab_size(tokenizer, teacher_output_size, student_output_size):
    """How many leading output rows the two models share: the tokenizer's ids."""
    n_ids = len(tokenizer)
    for side, size in (("teacher", teacher_output_size), ("student", student_output_size)):
        if size < n_ids:
            raise TokenizerMismatchError(
                f"the {side} has {size} output rows but the tokenizer has {n_ids} ids; "
                "every token id needs an output row"
            )
    return n_ids
