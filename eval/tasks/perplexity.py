"""Held-out perplexity on the corpus stage's packed validation split (``data/prepared/valid.npy``).

The loss is taid's own validation code (``Objective.language_modelling().eval_sums`` through the backend,
``summarise_eval`` here), so this number and the training stages' ``val_ppl`` are the same quantity.
"""
import json

import torch

from eval.data import require_file
from eval.tasks.base import Skip, Task, batches, register
from taid.data import load_packed
from taid.objective import summarise_eval


class PerplexityTask(Task):
    name = "perplexity"
    SETTINGS = ()

    def run(self, backend, context):
        context.check_keys(self.name, self.SETTINGS)
        if context.valid_path is None:
            raise Skip("no packed validation split given (--valid data/prepared/valid.npy)")
        path = require_file(self.name, context.valid_path)
        self.check_tokenizer(backend, path)
        rows = load_packed(path)
        rows = rows[: context.limit] if context.limit else rows
        sums = torch.zeros(3, dtype=torch.float64)
        bar = context.progress(self.name, len(rows))
        for batch in batches(rows, context.batch_size):
            nll, n_tokens = backend.packed_loss_sums(batch)
            sums += torch.tensor([nll, 0.0, n_tokens], dtype=torch.float64)
            bar.update(len(batch))
        bar.close()
        summary = summarise_eval(sums, with_teacher=False)
        return {"score": summary["val_ppl"], "n": summary["val_tokens"], "shots": 0, "metric": "perplexity",
                "loss": summary["val_loss"], "sequences": len(rows), "higher_is_better": False}

    def check_tokenizer(self, backend, path):
        """Token ids only mean something to the tokenizer that made them: the prepare stage records it."""
        meta_path = path.parent / "meta.json"
        fingerprint = backend.tokenizer_fingerprint()
        if meta_path.is_file() and fingerprint is not None:
            if json.loads(meta_path.read_text())["tokenizer_sha256"] != fingerprint:
                raise Skip(f"{path} was tokenized with another tokenizer than the model's")


TASK = register(PerplexityTask())
