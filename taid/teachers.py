"""Where a distillation step gets the teacher's distributions: the teacher model run live beside the
student, or the offline top-k cache it wrote once (``taid.cache``).

Both answer the same question, ``teacher.kept(batch)``: an object that gives the teacher's logits (or
log-probabilities, which any loss treats alike) over the first ``n_shared`` ids for any slice of the batch's
kept positions, so the chunked loss asks for one chunk at a time and never holds ``[N, V]`` at once.
"""
import torch
from torch.distributed.tensor import DTensor

from taid.cache import TopK, expand
from taid.models import lm_head_weight


class LiveTeacher:
    def __init__(self, model, n_shared=None):
        self.model, self.n_shared = model, n_shared

    def to(self, device):
        if getattr(self.model, "hf_device_map", None) is None:  # a device-mapped teacher stays where it is
            self.model.to(device)
        self.model.eval()
        return self

    @torch.no_grad()
    def kept(self, batch):
        hidden = self._final_hidden(batch)[:, :-1][batch["mask"]]
        head = _whole(lm_head_weight(self.model))
        return HeadLogits(hidden, head if self.n_shared is None else head[: self.n_shared])

    def _final_hidden(self, batch):
        """The base model's output, caught on its way through the model's own forward (so that FSDP and
        device-map hooks run as they would), with logits for one position only: without gradients no
        layer's states need keeping, and a 32B teacher's would cost GiBs per GPU."""
        caught = {}

        def catch(module, args, out):
            caught["hidden"] = out.last_hidden_state

        hook = self.model.base_model.register_forward_hook(catch)
        try:
            self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=1,
                       use_cache=False)
        finally:
            hook.remove()
        return caught["hidden"]


def _whole(weight):
    """A weight FSDP left sharded after the forward, gathered (the LM head of a tied, sharded teacher)."""
    return weight.full_tensor() if isinstance(weight, DTensor) else weight


class HeadLogits:
    """Logits ``hidden[rows] @ head.T`` computed slice by slice."""

    def __init__(self, hidden, head):
        self.hidden, self.head = hidden, head

    def __call__(self, rows):
        return self.hidden[rows].to(self.head.device) @ self.head.T


class CachedTeacher:
    """The teacher as the cache recorded it: top-k log-probs plus the tail rule of ``taid.cache.expand``."""

    def __init__(self, reader, n_shared=None):
        if n_shared is not None and reader.vocab_size != n_shared:
            raise ValueError(f"the teacher cache covers {reader.vocab_size} ids but distillation compares "
                             f"{n_shared}; rebuild the cache with this tokenizer")
        self.reader = reader

    def to(self, device):
        return self  # entries move to the batch's device as they are read

    def kept(self, batch):
        entries = self.reader.get(batch["split"], batch["sample_ids"])
        expected = batch["mask"].sum(dim=1).tolist()
        for sample_id, entry, n in zip(batch["sample_ids"], entries, expected):
            if len(entry.ids) != n:
                raise ValueError(f"teacher cache has {len(entry.ids)} positions for {batch['split']} sample "
                                 f"{sample_id}, the data has {n}: the cache was built from other data")
        return _CachedRows(TopK.cat(entries).to(batch["mask"].device), self.reader.vocab_size)


class _CachedRows:
    def __init__(self, top, vocab_size):
        self.top, self.vocab_size = top, vocab_size

    def __call__(self, rows):
        top = self.top
        return expand(TopK(top.ids[rows], top.logprobs[rows], top.log_rest[rows]), self.vocab_size)
