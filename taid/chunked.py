"""The distillation loss, plain and chunked.

``LossSpec`` turns student logits, teacher logits and labels into the summed per-token loss
``(1 - ce_weight) * divergence + ce_weight * cross-entropy`` over kept tokens. The chunked path feeds it
hidden states and LM-head weights one chunk of tokens at a time, so logits never exist for more than
``chunk_size`` tokens at once: peak memory stays O(chunk × vocab) instead of O(tokens × vocab). Gradients
are computed chunk by chunk inside the forward pass (no recomputation), which is why values and
gradients equal the plain path's.
"""
from dataclasses import dataclass, field
from typing import Callable

import torch

from taid.losses import cross_entropy


@dataclass
class LossSpec:
    loss_fn: Callable                 # a divergence from taid.losses
    loss_kwargs: dict = field(default_factory=dict)
    n_shared: int | None = None       # compare over the first n_shared ids (see taid.vocab)
    ce_weight: float = 0.0            # 0: pure distillation, 1: cross-entropy on the data only

    @property
    def needs_teacher(self):
        return self.ce_weight < 1.0

    def __call__(self, student_logits, teacher_logits, labels, mask):
        """Summed loss over kept tokens; the caller divides once by the step's token count."""
        total = student_logits.new_zeros((), dtype=torch.float32)
        if self.needs_teacher:
            n = student_logits.shape[-1] if self.n_shared is None else self.n_shared
            divergence = self.loss_fn(
                student_logits[..., :n], teacher_logits[..., :n], mask, **self.loss_kwargs, reduction="sum"
            )
            total = total + (1.0 - self.ce_weight) * divergence
        if self.ce_weight > 0:
            total = total + self.ce_weight * cross_entropy(student_logits, labels, mask, reduction="sum")
        return total


def chunked_loss(spec, student_hidden, student_head, teacher_logits, labels, mask, chunk_size):
    """``spec`` over ``[N, H]`` hidden states and ``[V, H]`` LM-head weights, ``chunk_size`` tokens at a time.

    ``teacher_logits(rows)`` gives the teacher's ``[len(rows), n_shared]`` logits for a slice of the N
    positions (see ``taid.teachers``); None when ``spec.needs_teacher`` is False. Returns the summed loss,
    with gradients flowing to ``student_hidden`` and ``student_head``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return _ChunkedLoss.apply(student_hidden, student_head, teacher_logits, labels, mask, spec, chunk_size)


class _ChunkedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, head, teacher, labels, mask, spec, chunk_size):
        grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_head = torch.zeros_like(head, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            teacher_logits = teacher(rows) if spec.needs_teacher else None
            logits = hidden[rows] @ head.T
            if grad_hidden is None and grad_head is None:  # validation: the value alone
                total += spec(logits, teacher_logits, labels[rows], mask[rows])
                continue
            with torch.enable_grad():
                logits.requires_grad_()
                loss = spec(logits, teacher_logits, labels[rows], mask[rows])
                (grad_logits,) = torch.autograd.grad(loss, logits)
            # the two matmuls of the LM head's backward, by hand: no [V, H] temporary per chunk
            if grad_hidden is not None:
                grad_hidden[rows] = (grad_logits @ head).to(grad_hidden.dtype)
            if grad_head is not None:
                grad_head.addmm_(grad_logits.T.float(), hidden[rows].float())
            total += loss.detach()
        ctx.head_dtype = head.dtype
        ctx.save_for_backward(grad_hidden, grad_head)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_head = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_output
        if grad_head is not None:
            grad_head = (grad_head * grad_output).to(ctx.head_dtype)
        return grad_hidden, grad_head, None, None, None, None, None
