"""What a training step minimises: the student's loss on a batch of packed rows, summed over kept tokens.

One class serves both training stages: with no teacher and ``ce_weight=1`` it is plain language
modelling (how the tiny default teacher is trained); with a teacher it is distillation with any
divergence of ``taid.losses``, TAID's t supplied per step by the trainer. The teacher is a model (run
live) or any source of ``taid.teachers`` (e.g. the offline top-k cache).
"""
import math

import torch

from taid.chunked import LossSpec, chunked_loss
from taid.losses import forward_kl, get_loss, loss_params
from taid.models import final_hidden, lm_head_weight
from taid.teachers import LiveTeacher


class Objective:
    def __init__(self, loss="taid", loss_config=None, teacher=None, n_shared=None, ce_weight=0.0, chunk_size=1024):
        if not 0.0 <= ce_weight <= 1.0:
            raise ValueError(f"ce_weight must be in [0, 1], got {ce_weight}")
        if ce_weight < 1.0 and teacher is None:
            raise ValueError(f"loss {loss!r} needs a teacher (or ce_weight=1 for cross-entropy only)")
        self.loss_name = loss
        self.loss_fn = get_loss(loss) if ce_weight < 1.0 else None
        self.loss_config = dict(loss_config or {})
        if isinstance(teacher, torch.nn.Module):
            teacher = LiveTeacher(teacher, n_shared)
        self.teacher, self.n_shared = teacher, n_shared
        self.ce_weight, self.chunk_size = float(ce_weight), int(chunk_size)
        self.uses_t = self.loss_fn is not None and "t" in loss_params(loss, {**self.loss_config, "t": 0.0})

    @classmethod
    def language_modelling(cls, chunk_size=1024):
        return cls(loss=None, ce_weight=1.0, chunk_size=chunk_size)

    def spec(self, t=None):
        kwargs = {}
        if self.loss_fn is not None:
            kwargs = loss_params(self.loss_name, {**self.loss_config, **({"t": t} if self.uses_t else {})})
        return LossSpec(self.loss_fn, kwargs, self.n_shared, self.ce_weight)

    def to(self, device):
        if self.teacher is not None:
            self.teacher.to(device)
        return self

    def loss_sum(self, student, batch, t=None, spec=None):
        """Summed loss over the batch's kept tokens, and their count."""
        spec = spec or self.spec(t)
        kept = self._kept_states(student, batch, with_teacher=spec.needs_teacher)
        return self._apply(spec, student, *kept), int(batch["mask"].sum())

    def _kept_states(self, student, batch, with_teacher):
        """The student's final hidden states ``[N_kept, H]`` at kept positions, the teacher's logits for
        them (a callable over row slices, see ``taid.teachers``) and the labels."""
        mask = batch["mask"]
        hidden = final_hidden(student, batch)[:, :-1][mask]
        teacher_logits = self.teacher.kept(batch) if with_teacher else None
        return hidden, teacher_logits, batch["labels"][mask]

    def _apply(self, spec, student, hidden, teacher_logits, labels):
        keep = torch.ones_like(labels, dtype=torch.bool)
        head = lm_head_weight(student)
        if self.chunk_size > 0:
            return chunked_loss(spec, hidden, head, teacher_logits, labels, keep, self.chunk_size)
        return spec(hidden @ head.T, teacher_logits(slice(None)) if spec.needs_teacher else None, labels, keep)

    @torch.no_grad()
    def eval_sums(self, student, batches):
        """Summed validation CE, summed KL(teacher ‖ student) (0 without a teacher) and the token count,
        as one tensor so that ranks can add theirs up before ``summarise_eval``. One forward pass of each
        model per batch serves both sums."""
        ce_spec = LossSpec(None, ce_weight=1.0)
        kl_spec = LossSpec(forward_kl, {}, self.n_shared, 0.0) if self.teacher is not None else None
        sums = torch.zeros(3, dtype=torch.float64)
        for batch in batches:
            kept = self._kept_states(student, batch, with_teacher=kl_spec is not None)
            sums[0] += float(self._apply(ce_spec, student, *kept))
            sums[2] += int(batch["mask"].sum())
            if kl_spec is not None:
                sums[1] += float(self._apply(kl_spec, student, *kept))
        return sums


def summarise_eval(sums, with_teacher):
    ce_total, kl_total, n_tokens = (float(x) for x in sums)
    n = max(n_tokens, 1)
    metrics = {"val_loss": ce_total / n, "val_ppl": math.exp(min(ce_total / n, 50.0)), "val_tokens": int(n_tokens)}
    if with_teacher:
        metrics["val_kl"] = kl_total / n
    return metrics
