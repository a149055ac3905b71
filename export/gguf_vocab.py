"""The tokenizer half of a GGUF file, read from a Hugging Face tokenizer.

Two kinds, as llama.cpp knows them:

- SentencePiece (model ``llama``): pieces, scores and types from ``tokenizer.model`` (byte-fallback pieces
  ``<0x..>`` are BYTE, ``<|im_start|>``-style user symbols USER_DEFINED), whether a space is prefixed from
  the Hugging Face tokenizer's Metaspace pre-tokenizer;
- byte-level BPE (model ``gpt2``, Qwen-style): tokens in their byte-level spelling, merges, and the
  pre-tokenizer llama.cpp must split with, recognised by its regex.

The Hugging Face tokenizer is the reference for everything else: added tokens (special → CONTROL, others
USER_DEFINED), special ids, whether BOS/EOS are added (seen by encoding a text), the chat template.
Embedding rows beyond the tokenizer (Qwen2.5-1.5B has 151,936 rows for 151,665 tokens) become ``[PADn]``.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import gguf
from sentencepiece import sentencepiece_model_pb2

from export.gguf_tables import (ADDED_TOKEN_SCORE, BPE_PRE_TOKENIZERS, INEXACT_PREPEND_SCHEMES, PREPEND_SCHEMES,
                                SENTENCEPIECE_BPE, SENTENCEPIECE_TYPES, supported)

SPECIAL_IDS = ("bos", "eos", "unk", "pad")


class VocabError(ValueError):
    """A tokenizer the export cannot write faithfully."""


@dataclass
class Vocab:
    model: str                       # "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    pre: str                         # llama.cpp's pre-tokenizer name
    tokens: list
    types: list
    scores: list | None = None       # SentencePiece only
    merges: list | None = None       # BPE only
    special_ids: dict = field(default_factory=dict)
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool | None = None   # SentencePiece only
    chat_template: str | None = None
    notes: list = field(default_factory=list)


def read_vocab(tokenizer, n_rows, sentencepiece_model=None):
    """The GGUF vocabulary of a loaded Hugging Face ``tokenizer`` for an embedding of ``n_rows`` rows.

    ``sentencepiece_model``: path of the ``tokenizer.model`` the tokenizer was made from; given, the
    vocabulary is written as SentencePiece, else the tokenizer must be a byte-level BPE."""
    pipeline = json.loads(tokenizer.backend_tokenizer.to_str())
    if len(tokenizer) > n_rows:
        raise VocabError(f"the tokenizer has {len(tokenizer)} entries but the model only {n_rows} embedding rows")
    if sentencepiece_model is not None:
        vocab = _sentencepiece_vocab(tokenizer, pipeline, Path(sentencepiece_model), n_rows)
    else:
        vocab = _bpe_vocab(tokenizer, pipeline, n_rows)
    vocab.special_ids = {kind: getattr(tokenizer, f"{kind}_token_id") for kind in SPECIAL_IDS
                         if getattr(tokenizer, f"{kind}_token_id") is not None}
    vocab.add_bos, vocab.add_eos = _added_specials(tokenizer)
    vocab.chat_template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    return vocab


def write_vocab(writer, vocab):
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges is not None:
        writer.add_token_merges(vocab.merges)
    for kind, token_id in vocab.special_ids.items():
        getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.chat_template is not None:
        writer.add_chat_template(vocab.chat_template)


# -- SentencePiece

def _sentencepiece_vocab(tokenizer, pipeline, model_path, n_rows):
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_path.read_bytes())
    _check_same_pieces(tokenizer, proto, model_path)
    tokens = [piece.piece for piece in proto.pieces]
    scores = [piece.score for piece in proto.pieces]
    types = [SENTENCEPIECE_TYPES[piece.type] for piece in proto.pieces]
    for token_id, added in sorted(tokenizer.added_tokens_decoder.items()):
        if token_id >= len(tokens):
            _append_added(tokens, types, token_id, added, model_path)
            scores.append(ADDED_TOKEN_SCORE)
        elif types[token_id] == gguf.TokenType.NORMAL:
            types[token_id] = _added_type(added)
    _pad_rows(tokens, types, n_rows, scores)
    return Vocab(model="llama", pre="default", tokens=tokens, types=types, scores=scores,
                 add_space_prefix=_space_prefix(pipeline), notes=tokenizer_notes(tokenizer))


def _check_same_pieces(tokenizer, proto, model_path):
    """The ``tokenizer.model`` must be the one the Hugging Face tokenizer was made from."""
    if proto.trainer_spec.model_type != SENTENCEPIECE_BPE:
        raise VocabError(f"{model_path}: only SentencePiece BPE models are supported (llama.cpp's llama "
                         f"tokenizer merges by score); this one has model type {proto.trainer_spec.model_type}")
    by_id = {token_id: token for token, token_id in tokenizer.get_vocab().items()}
    for token_id, piece in enumerate(proto.pieces):
        if by_id.get(token_id) != piece.piece:
            raise VocabError(f"{model_path} does not belong to this tokenizer: id {token_id} is {piece.piece!r} "
                             f"there and {by_id.get(token_id)!r} in the Hugging Face tokenizer")


def tokenizer_notes(tokenizer):
    """What llama.cpp cannot reproduce of this tokenizer, one sentence each (empty when nothing)."""
    pre = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    scheme = pre.get("prepend_scheme") if pre.get("type") == "Metaspace" else None
    if scheme not in INEXACT_PREPEND_SCHEMES:
        return []
    return [f"the tokenizer prefixes '▁' to the start of the input only (Metaspace prepend_scheme {scheme!r}), "
            "which llama.cpp cannot do: it prefixes either every text after a special token or none (written: "
            "none); save the tokenizer with add_prefix_space=False for an exact match"]


def _space_prefix(pipeline):
    pre = pipeline.get("pre_tokenizer") or {}
    scheme = pre.get("prepend_scheme") if pre.get("type") == "Metaspace" else None
    if scheme not in PREPEND_SCHEMES:
        raise VocabError(f"a SentencePiece tokenizer needs a Metaspace pre-tokenizer with a prepend scheme "
                         f"({supported(PREPEND_SCHEMES)}); this one has {pre or 'none'}")
    return PREPEND_SCHEMES[scheme]


# -- byte-level BPE

def _bpe_vocab(tokenizer, pipeline, n_rows):
    model = pipeline.get("model") or {}
    byte_level = (pipeline.get("decoder") or {}).get("type") == "ByteLevel"
    if model.get("type") != "BPE" or model.get("byte_fallback") or not byte_level:
        raise VocabError("the tokenizer is not a byte-level BPE and no tokenizer.model was found beside it "
                         "(a SentencePiece vocabulary needs the scores only that file holds: give the tokenizer "
                         "stage's folder); supported: SentencePiece (llama), byte-level BPE (gpt2)")
    by_id = {token_id: token for token, token_id in tokenizer.get_vocab().items()}
    tokens, types = [], []
    for token_id in range(len(tokenizer)):
        if token_id not in by_id:
            raise VocabError(f"the tokenizer has no token with id {token_id} (ids must be contiguous)")
        tokens.append(by_id[token_id])
        types.append(gguf.TokenType.NORMAL)
    for token_id, added in tokenizer.added_tokens_decoder.items():
        types[token_id] = _added_type(added)
    _pad_rows(tokens, types, n_rows)
    return Vocab(model="gpt2", pre=_bpe_pre_tokenizer(pipeline), tokens=tokens, types=types,
                 merges=_merges(model))


def _bpe_pre_tokenizer(pipeline):
    pre = pipeline.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    patterns = [step.get("pattern", {}).get("Regex") for step in steps if step.get("type") == "Split"]
    for pattern in patterns:
        if pattern in BPE_PRE_TOKENIZERS:
            return BPE_PRE_TOKENIZERS[pattern]
    raise VocabError(f"unknown BPE pre-tokenizer (split patterns {patterns or 'none'}); llama.cpp pre-tokenizers "
                     f"known here: {supported(set(BPE_PRE_TOKENIZERS.values()))}")


def _merges(model):
    """Merges as llama.cpp reads them: "left right", a space inside a part spelled as U+0120 (gguf's rule)."""
    merges = model.get("merges") or []
    if merges and isinstance(merges[0], list):
        return [" ".join(part.replace(" ", chr(ord(" ") + 256)) for part in pair) for pair in merges]
    return list(merges)


# -- shared

def _added_type(added):
    return gguf.TokenType.CONTROL if added.special else gguf.TokenType.USER_DEFINED


def _append_added(tokens, types, token_id, added, where):
    if token_id != len(tokens):
        raise VocabError(f"{where}: added token {added.content!r} has id {token_id}, expected {len(tokens)} "
                         "(added tokens must follow the vocabulary without gaps)")
    tokens.append(added.content)
    types.append(_added_type(added))


def _pad_rows(tokens, types, n_rows, scores=None):
    for token_id in range(len(tokens), n_rows):
        tokens.append(f"[PAD{token_id}]")
        types.append(gguf.TokenType.UNUSED)
        if scores is not None:
            scores.append(ADDED_TOKEN_SCORE)


def _added_specials(tokenizer):
    """Whether encoding adds BOS / EOS, as the tokenizer actually does it."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    add_bos = bos is not None and len(full) > len(plain) and full[0] == bos
    add_eos = eos is not None and len(full) > len(plain) and full[-1] == eos
    return add_bos, add_eos
