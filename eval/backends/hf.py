"""A Hugging Face transformers model as an evaluation backend: batched, greedy, stop sequences."""
import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from eval.prompts import cut_at_stop
from taid.data import to_batch
from taid.models import load_model
from taid.objective import Objective, final_hidden
from taid.vocab import load_tokenizer, tokenizer_fingerprint


class HFBackend:
    name = "hf"

    def __init__(self, model, tokenizer, loss_chunk_size=1024):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_length = getattr(model.config, "max_position_embeddings", None) or 2048
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = _eos_ids(model, tokenizer)
        self.objective = Objective.language_modelling(chunk_size=loss_chunk_size)

    @classmethod
    def from_directory(cls, path, dtype="float32", device="auto", loss_chunk_size=1024):
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        model = load_model(str(path), dtype=dtype).to(device)
        return cls(model, load_tokenizer(path), loss_chunk_size)

    # -- the backend interface (see eval.backends)

    @torch.no_grad()
    def loglikelihood(self, requests):
        """Summed log-probability of each continuation after its context, one forward pass per batch."""
        sequences, n_continuation = [], []
        for context, continuation in requests:
            whole = self.encode(context + continuation)
            n_context = len(self.encode(context))  # lm-eval's split: the continuation is what follows
            if n_context == 0:
                whole, n_context = [self.eos_ids[0]] + whole, 1
            sequences.append(whole[-self.max_length:])
            n_continuation.append(len(whole) - n_context)
        input_ids, attention_mask = self._right_padded(sequences)
        hidden = final_hidden(self.model, {"input_ids": input_ids, "attention_mask": attention_mask})
        head = self.model.get_output_embeddings()
        scores = []
        for row, (sequence, n) in enumerate(zip(sequences, n_continuation)):
            end = len(sequence)
            logits = head(hidden[row, end - n - 1: end - 1]).float()   # positions predicting the continuation
            targets = torch.tensor(sequence[end - n:], device=self.device)
            scores.append(float(torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).sum()))
        return scores

    def generate(self, prompts, max_new_tokens, stop=()):
        return self._generate([self.encode(p) for p in prompts], max_new_tokens, stop)

    def chat(self, conversations, max_new_tokens):
        """The assistant's next reply in each conversation, through the tokenizer's chat template."""
        texts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                 for c in conversations]
        return self._generate([self.encode(t, special_tokens=False) for t in texts], max_new_tokens, ())

    def has_chat_template(self):
        return bool(getattr(self.tokenizer, "chat_template", None))

    @torch.no_grad()
    def packed_loss_sums(self, rows):
        """Summed next-token cross-entropy over packed rows (taid's validation loss) and the token count."""
        sums = self.objective.eval_sums(self.model, [to_batch(rows, self.device)])
        return float(sums[0]), int(sums[2])

    def tokenizer_fingerprint(self):
        return tokenizer_fingerprint(self.tokenizer)

    # -- helpers

    def encode(self, text, special_tokens=True):
        return self.tokenizer(text, add_special_tokens=special_tokens)["input_ids"]

    def _right_padded(self, sequences):
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def _generate(self, token_lists, max_new_tokens, stop):
        """Greedy continuations of left-padded prompts; each row stops at EOS or once it holds a stop sequence."""
        keep = max(1, self.max_length - max_new_tokens)
        token_lists = [tokens[-keep:] for tokens in token_lists]
        width = max(len(t) for t in token_lists)
        ids = torch.full((len(token_lists), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, tokens in enumerate(token_lists):
            ids[row, width - len(tokens):] = torch.tensor(tokens)
            mask[row, width - len(tokens):] = 1
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.pad_id,
                                  eos_token_id=self.eos_ids)
        criteria = StoppingCriteriaList([_StopOnText(self.tokenizer, width, stop)] if stop else [])
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  generation_config=config, stopping_criteria=criteria)
        return [self._reply(row[width:].tolist(), stop) for row in out]

    def _reply(self, new_tokens, stop):
        ends = [i for i, token in enumerate(new_tokens) if token in self.eos_ids]   # finished rows are padded after EOS
        new_tokens = new_tokens[: ends[0]] if ends else new_tokens
        return cut_at_stop(self.tokenizer.decode(new_tokens, skip_special_tokens=False), stop)


class _StopOnText(StoppingCriteria):
    """Per row: done once the text generated after ``start`` holds one of ``stop``."""

    def __init__(self, tokenizer, start, stop):
        self.tokenizer, self.start, self.stop = tokenizer, start, stop

    def __call__(self, input_ids, scores, **kwargs):
        texts = self.tokenizer.batch_decode(input_ids[:, self.start:])
        return torch.tensor([any(s in text for s in self.stop) for text in texts], device=input_ids.device)


def _eos_ids(model, tokenizer):
    configured = getattr(model.generation_config, "eos_token_id", None) if model.generation_config else None
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in ids + [tokenizer.eos_token_id] if i is not None]
    return list(dict.fromkeys(ids))
