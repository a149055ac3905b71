"""A GGUF file through llama-cpp-python, behind the same interface as the Hugging Face backend.

llama-cpp-python is installed with the export stage (it compiles llama.cpp); until then this backend
explains how to get it. Greedy decoding is llama.cpp's temperature 0; log-likelihoods and the packed loss
come from the logits of every position (``logits_all``).
"""
from pathlib import Path

import numpy as np
import torch

from eval.data import DataError, require_file
from eval.prompts import cut_at_stop
from taid.data import PAD
from taid.losses import cross_entropy


class GGUFBackend:
    name = "gguf"

    def __init__(self, llama):
        self.llama = llama

    @classmethod
    def from_file(cls, path, n_ctx=4096):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise DataError("the gguf backend needs llama-cpp-python: pip install llama-cpp-python") from None
        path = require_file("gguf backend", Path(path))
        return cls(Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False))

    def loglikelihood(self, requests):
        scores = []
        for context, continuation in requests:
            context_tokens = self._tokenize(context)
            whole = self._tokenize(context + continuation)
            logits = self._logits(whole)
            n = len(whole) - len(context_tokens)
            log_probs = torch.log_softmax(logits[len(whole) - n - 1: len(whole) - 1], dim=-1)
            scores.append(float(log_probs.gather(1, torch.tensor(whole[len(whole) - n:])[:, None]).sum()))
        return scores

    def generate(self, prompts, max_new_tokens, stop=()):
        return [cut_at_stop(self.llama.create_completion(p, max_tokens=max_new_tokens, temperature=0.0,
                                                         stop=list(stop) or None)["choices"][0]["text"], stop)
                for p in prompts]

    def chat(self, conversations, max_new_tokens):
        return [self.llama.create_chat_completion(messages=c, max_tokens=max_new_tokens, temperature=0.0)
                ["choices"][0]["message"]["content"].strip() for c in conversations]

    def has_chat_template(self):
        return "tokenizer.chat_template" in (self.llama.metadata or {})

    def packed_loss_sums(self, rows):
        nll, count = 0.0, 0
        for row in np.asarray(rows):
            tokens = row[row != PAD].tolist()
            if len(tokens) < 2:
                continue
            logits = self._logits(tokens)[:-1]
            labels = torch.tensor(tokens[1:])
            nll += float(cross_entropy(logits, labels, torch.ones_like(labels, dtype=torch.bool), reduction="sum"))
            count += len(tokens) - 1
        return nll, count

    def tokenizer_fingerprint(self):
        return None   # the GGUF holds its own copy of the vocabulary; the export stage checks it

    def _tokenize(self, text):
        return self.llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def _logits(self, tokens):
        self.llama.reset()
        self.llama.eval(tokens)
        return torch.from_numpy(np.array(self.llama.scores[: len(tokens)], dtype=np.float32))
