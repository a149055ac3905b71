"""Helpers the GGUF tests share (no tests here): the two tokenizer kinds built locally — a SentencePiece BPE
with byte fallback trained as the tokenizer stage trains it, and a byte-level BPE with Qwen2's pipeline
trained with the tokenizers library — and tiny Qwen2 / Llama model directories over them."""
import json
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaTokenizer, Qwen2Config,
                          Qwen2ForCausalLM, Qwen2Tokenizer)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from stages.common import read_documents
from stages.tokenizer import CHAT_PIECES, SPECIAL_PIECES, train_sentencepiece

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "train.jsonl.gz"
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Japanese strings the token-id tests compare: kana, kanji, half/full width, emoji, spaces, newlines
JAPANESE = [
    "ひらがなとカタカナと漢字",
    "今日は良い天気ですね。明日は雨が降るでしょう。",
    "ｶﾀｶﾅ（半角）とカタカナ（全角）、ＡＢＣとABC、１２３と123",
    "絵文字😀🍣🗾と👨‍👩‍👧‍👦",
    " 先頭の空白、二つの  空白、全角の　空白 ",
    "一行目\n二行目\n\n\t字下げ",
    "「東京タワー」は333メートル。",
]


@lru_cache(maxsize=None)
def sample_texts(n=300):
    return tuple(text for _, text in zip(range(n), read_documents(SAMPLE)))


@lru_cache(maxsize=None)
def _trained_sentencepiece():
    trained = Path(tempfile.mkdtemp(prefix="gguf-sp-trained-"))
    train_sentencepiece(sample_texts(), 1200, trained, threads=1)
    return trained


@lru_cache(maxsize=None)
def sentencepiece_tokenizer_dir(prefix_space=False):
    """The tokenizer stage's SentencePiece (BPE, byte fallback, pad/unk/bos/eos 0-3, <|im_start|> and
    <|im_end|> as user symbols) with a chat template. ``prefix_space``: False, as the tokenizer stage saves
    it (``add_prefix_space=False``: no "▁" prefixed, which llama.cpp reproduces exactly); True, transformers'
    default for LlamaTokenizer (a "▁" before the start of the input only)."""
    trained, out = _trained_sentencepiece(), Path(tempfile.mkdtemp(prefix="gguf-sp-"))
    scratch = Path(tempfile.mkdtemp(prefix="gguf-sp-model-"))
    shutil.copy(trained / "tokenizer.model", scratch)
    tokenizer = LlamaTokenizer.from_pretrained(
        scratch, pad_token=SPECIAL_PIECES["pad"], unk_token=SPECIAL_PIECES["unk"], bos_token=SPECIAL_PIECES["bos"],
        eos_token=SPECIAL_PIECES["eos"], add_bos_token=False, add_prefix_space=prefix_space)
    tokenizer.save_pretrained(out)
    shutil.copy(trained / "tokenizer.model", out)
    tokenizer = LlamaTokenizer.from_pretrained(out)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    return out


@lru_cache(maxsize=None)
def bpe_tokenizer_dir():
    """A byte-level BPE over the sample corpus in Qwen2's pipeline (NFC, Qwen2's split regex, byte level),
    saved as a Qwen2Tokenizer with Qwen2.5-Instruct's specials: <|endoftext|> (pad), <|im_start|>,
    <|im_end|> (eos), added after the vocabulary, no BOS."""
    raw = Tokenizer(models.BPE())
    raw.normalizer = normalizers.NFC()
    raw.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raw.train_from_iterator(sample_texts(), trainers.BpeTrainer(
        vocab_size=700, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    model = json.loads(raw.to_str())["model"]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=[tuple(pair) for pair in model["merges"]],
                               unk_token=None, bos_token=None, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": CHAT_PIECES})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = CHAT_TEMPLATE
    out = Path(tempfile.mkdtemp(prefix="gguf-bpe-"))
    tokenizer.save_pretrained(out)
    return out


def model_dir(tmp_path, tokenizer_dir, arch="qwen2", hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2,
              extra_rows=0, tie=True, seed=0, **config):
    """A seeded tiny model saved with its tokenizer (and tokenizer.model when there is one) in ``tmp_path``.
    ``extra_rows``: embedding rows beyond the tokenizer, as Qwen2.5-1.5B has 271."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)   # a tokenizer folder: no config.json to mislead it
    config_class, model_class = {"qwen2": (Qwen2Config, Qwen2ForCausalLM),
                                 "llama": (LlamaConfig, LlamaForCausalLM)}[arch]
    settings = dict(vocab_size=len(tokenizer) + extra_rows, hidden_size=hidden, intermediate_size=intermediate,
                    num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                    max_position_embeddings=256, tie_word_embeddings=tie, rms_norm_eps=1e-6,
                    eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                    pad_token_id=tokenizer.pad_token_id)
    settings.update(config)
    torch.manual_seed(seed)
    model = model_class(config_class(**settings)).eval()
    out = Path(tmp_path) / f"{arch}-model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if (Path(tokenizer_dir) / "tokenizer.model").exists():
        shutil.copy(Path(tokenizer_dir) / "tokenizer.model", out)
    return out, model, tokenizer
