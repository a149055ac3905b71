"""A GGUF file through llama-cpp-python, behind the same interface as the Hugging Face backend.

Text is tokenized by llama.cpp as ``tokenizer(text)`` does in transformers: special tokens in the text are
parsed and BOS is added when the file says so. Greedy decoding is llama.cpp's temperature 0 (top-1);
log-likelihoods and the packed loss come from the logits of every position (``logits_all``). Sequences
longer than the context keep their end, as the Hugging Face backend does.
"""
from pathlib import Path

import gguf
import numpy as np
import torch

from eval.data import DataError, require_file
from eval.prompts import cut_at_stop
from taid.data import PAD
from taid.losses import cross_entropy

MAX_CONTEXT = 2048   # logits_all keeps n_ctx × vocabulary floats: 1.2 GB at 2,048 × 151,936


class GGUFBackend:
    name = "gguf"

    def __init__(self, llama):
        self.llama = llama
        self.n_ctx = llama.n_ctx()

    @classmethod
    def from_file(cls, path, n_ctx=None):
        """``n_ctx``: the context to run with; default the file's training context, at most MAX_CONTEXT."""
        try:
            from llama_cpp import Llama
        except ImportError:
            raise DataError("the gguf backend needs llama-cpp-python (make install builds it)") from None
        path = require_file("gguf backend", Path(path))
        n_ctx = n_ctx or min(_trained_context(path), MAX_CONTEXT)
        try:
            llama = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, verbose=False, seed=0)
        except ValueError as error:
            raise DataError(f"gguf backend: llama.cpp cannot load {path} ({error})") from None
        return cls(llama)

    def close(self):
        self.llama.close()

    def loglikelihood(self, requests):
        scores = []
        for context, continuation in requests:
            whole = self._tokenize(context + continuation)
            n_context = len(self._tokenize(context))   # lm-eval's split: the continuation is what follows
            if n_context == 0:
                whole, n_context = [self.llama.token_eos()] + whole, 1
            n = len(whole) - n_context
            whole = whole[-self.n_ctx:]
            log_probs = torch.log_softmax(self._logits(whole)[len(whole) - n - 1: len(whole) - 1], dim=-1)
            scores.append(float(log_probs.gather(1, torch.tensor(whole[len(whole) - n:])[:, None]).sum()))
        return scores

    def generate(self, prompts, max_new_tokens, stop=()):
        keep = max(1, self.n_ctx - max_new_tokens)
        replies = []
        for prompt in prompts:
            completion = self.llama.create_completion(self._tokenize(prompt)[-keep:], max_tokens=max_new_tokens,
                                                      temperature=0.0, top_k=1, stop=list(stop) or None)
            replies.append(cut_at_stop(completion["choices"][0]["text"], stop))
        return replies

    def chat(self, conversations, max_new_tokens):
        return [self.llama.create_chat_completion(messages=c, max_tokens=max_new_tokens, temperature=0.0, top_k=1)
                ["choices"][0]["message"]["content"].strip() for c in conversations]

    def has_chat_template(self):
        return gguf.Keys.Tokenizer.CHAT_TEMPLATE in (self.llama.metadata or {})

    def packed_loss_sums(self, rows):
        nll, count = 0.0, 0
        for row in np.asarray(rows):
            tokens = row[row != PAD].tolist()
            if len(tokens) < 2:
                continue
            if len(tokens) > self.n_ctx:
                raise DataError(f"gguf backend: a packed row of {len(tokens)} tokens exceeds the context {self.n_ctx}")
            logits = self._logits(tokens)[:-1]
            labels = torch.tensor(tokens[1:])
            nll += float(cross_entropy(logits, labels, torch.ones_like(labels, dtype=torch.bool), reduction="sum"))
            count += len(tokens) - 1
        return nll, count

    def tokenizer_fingerprint(self):
        return None   # the GGUF holds its own copy of the vocabulary; the export stage checks it

    def _tokenize(self, text):
        return self.llama.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def _logits(self, tokens):
        self.llama.reset()
        self.llama.eval(tokens)
        return torch.from_numpy(np.array(self.llama.scores[: len(tokens)], dtype=np.float32))


def _trained_context(path):
    try:
        reader = gguf.GGUFReader(path)
    except Exception as error:   # numpy / struct errors on damaged bytes
        raise DataError(f"gguf backend: {path} is not a readable GGUF file ({error})") from None
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    field = reader.get_field(gguf.Keys.LLM.CONTEXT_LENGTH.format(arch=arch))
    return int(field.contents()) if field is not None else MAX_CONTEXT
