"""Helpers the eval tests share (no tests here): a small tokenizer trained on the fixtures' text, tiny
Qwen2 models over it, a stub LM whose choice scores the test sets, and a no-op progress bar."""
import tempfile
from functools import lru_cache
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from stages.tokenizer import train_sentencepiece

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "eval" / "fixtures"
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def fixture_texts():
    for path in sorted(FIXTURES.rglob("*")):
        if path.is_file():
            yield from (line for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


@lru_cache(maxsize=1)
def tokenizer_dir():
    """A SentencePiece tokenizer (as the tokenizer stage trains one) over the fixtures, with a chat template."""
    out = Path(tempfile.mkdtemp(prefix="eval-tokenizer-"))
    tokenizer = train_sentencepiece(fixture_texts(), 1200, out, threads=1)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    return out


def tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tokenizer_dir())


def tiny_model(tok, hidden_size=32, layers=1, seed=0):
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=2048, tie_word_embeddings=False,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    return Qwen2ForCausalLM(config).eval()


class NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def no_progress(description, total):
    return NoBar()


class StubLM:
    """A backend whose log-likelihoods the test sets: ``preferred(context) → continuation`` scores 0,
    every other continuation -1. Records what it was asked."""
    name = "stub"

    def __init__(self, preferred=lambda context: None, replies=None):
        self.preferred, self.replies = preferred, replies or {}
        self.contexts, self.prompts, self.conversations = [], [], []

    def loglikelihood(self, requests):
        self.contexts.extend(context for context, _ in requests)
        return [0.0 if continuation == self.preferred(context) else -1.0 for context, continuation in requests]

    def generate(self, prompts, max_new_tokens, stop=()):
        self.prompts.extend(prompts)
        return [self.replies.get(p, "") for p in prompts]

    def chat(self, conversations, max_new_tokens):
        self.conversations.append([list(c) for c in conversations])
        return [f"答え{len(c)}" for c in conversations]

    def has_chat_template(self):
        return True
