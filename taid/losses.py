"""Token-level distillation losses.

Every divergence has the signature ``loss(student_logits, teacher_logits, mask,
*, <params>, reduction="mean")``:

- ``student_logits``, ``teacher_logits``: ``[..., V]`` over the same vocabulary,
  any float dtype (softmax is computed in fp32).
- ``mask``: ``[...]`` bool, True = token kept. Logits at ignored positions may be
  garbage (NaN/inf); they never reach the value or the gradient.
- ``reduction``: ``"mean"`` = sum over kept tokens / number of kept tokens (0 when
  none is kept), ``"sum"`` = plain sum over kept tokens.

Notation: p = softmax(teacher), q = softmax(student). Each loss is a true
divergence (0 when p == q). Entries with probability 0 (-inf logits) follow the
convention 0 * log 0 = 0.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
from torch import Tensor

_REDUCTIONS = ("mean", "sum")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _masked_logits(logits: Tensor, mask: Tensor) -> Tensor:
    """fp32 logits with rows at ignored positions replaced by zeros (keeps NaN out)."""
    if mask.shape != logits.shape[:-1]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match logits {tuple(logits.shape)}")
    return torch.where(mask.to(torch.bool).unsqueeze(-1), logits.float(), 0.0)


def _prepare(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, reduction: str):
    """Validate arguments and return masked fp32 (student, teacher) logits."""
    _check_reduction(reduction)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} shapes differ"
        )
    return _masked_logits(student_logits, mask), _masked_logits(teacher_logits, mask)


def _log_probs(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, reduction: str):
    """Validate arguments and return fp32 (log q, log p)."""
    z_s, z_t = _prepare(student_logits, teacher_logits, mask, reduction)
    return torch.log_softmax(z_s, dim=-1), torch.log_softmax(z_t, dim=-1)


def _reduce(per_token: Tensor, mask: Tensor, reduction: str) -> Tensor:
    """Sum (or mean) of ``per_token`` over kept positions; ignored ones contribute 0."""
    mask = mask.to(torch.bool)
    total = torch.where(mask, per_token, 0.0).sum()
    if reduction == "sum":
        return total
    return total / mask.sum().clamp(min=1)


def _kl(log_a: Tensor, log_b: Tensor) -> Tensor:
    """Per-token KL(a‖b) = Σ_v a (log a − log b) over the last dim, with 0·log 0 = 0."""
    a = log_a.exp()
    diff = torch.where(a > 0, log_a - log_b, 0.0)
    return (a * diff).sum(-1)


def _log_mix(log_a: Tensor, log_b: Tensor, w: float) -> Tensor:
    """log(w·a + (1−w)·b) computed in log space; entries where both are 0 give −inf
    without producing NaN gradients."""
    if w == 0.0:
        return log_b
    if w == 1.0:
        return log_a
    x, y = log_a + math.log(w), log_b + math.log1p(-w)
    both_zero = torch.isneginf(x) & torch.isneginf(y)
    mixed = torch.logaddexp(torch.where(both_zero, 0.0, x), torch.where(both_zero, 0.0, y))
    return torch.where(both_zero, -math.inf, mixed)


def _check_unit(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def forward_kl(student_logits, teacher_logits, mask, *, reduction="mean"):
    """KL(p‖q) = Σ p (log p − log q), per kept token, reduced."""
    log_q, log_p = _log_probs(student_logits, teacher_logits, mask, reduction)
    return _reduce(_kl(log_p, log_q), mask, reduction)


def reverse_kl(student_logits, teacher_logits, mask, *, reduction="mean"):
    """KL(q‖p) = Σ q (log q − log p), per kept token, reduced."""
    log_q, log_p = _log_probs(student_logits, teacher_logits, mask, reduction)
    return _reduce(_kl(log_q, log_p), mask, reduction)


def tvd(student_logits, teacher_logits, mask, *, reduction="mean"):
    """Total variation distance ½ Σ |p − q|, per kept token, reduced."""
    log_q, log_p = _log_probs(student_logits, teacher_logits, mask, reduction)
    return _reduce(0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1), mask, reduction)


def skew_forward_kl(student_logits, teacher_logits, mask, *, lam=0.1, reduction="mean"):
    """Skew forward KL (DistiLLM): KL(p ‖ λp + (1−λ)q), λ in [0, 1]."""
    lam = _check_unit("lam", lam)
    log_q, log_p = _log_probs(student_logits, teacher_logits, mask, reduction)
    return _reduce(_kl(log_p, _log_mix(log_p, log_q, lam)), mask, reduction)


def skew_reverse_kl(student_logits, teacher_logits, mask, *, lam=0.1, reduction="mean"):
    """Skew reverse KL (DistiLLM): KL(q ‖ λq + (1−λ)p), λ in [0, 1]."""
    lam = _check_unit("lam", lam)
    log_q, log_p = _log_probs(student_logits, teacher_logits, mask, reduction)
    return _reduce(_kl(log_q, _log_mix(log_q, log_p, lam)), mask, reduction)


def generalized_jsd(student_logits, teacher_logits, mask, *, beta=0.1, reduction="mean"):
    """Generalized JSD (GKD/TRL convention): β·KL(p‖m) + (1−β)·KL(q‖m), m = βp + (1−β)q.

    β = 0 is defined as KL(p‖q) and β = 1 as KL(q‖p) (the limits of the formula
    itself are 0 there).
    """
    beta = _check_unit("beta", beta)
    log_q, log_p = _log_probs(student_logits, teacher_logits, mask, reduction)
    if beta == 0.0:
        per_token = _kl(log_p, log_q)
    elif beta == 1.0:
        per_token = _kl(log_q, log_p)
    else:
        log_m = _log_mix(log_p, log_q, beta)
        per_token = beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)
    return _reduce(per_token, mask, reduction)


def adaptive_kl(student_logits, teacher_logits, mask, *, mu=0.5, reduction="mean"):
    """Adaptive KL (Wu et al. 2024): (g_head·KL(p‖q) + g_tail·KL(q‖p)) / (g_head + g_tail).

    Per token, teacher probabilities are sorted ascending; the tail is the set of
    entries whose inclusive cumulative mass is < μ, the head is the rest (mask
    mapped back to vocabulary order). g_head = Σ_head |p − q|, g_tail = Σ_tail |p − q|
    (no gradient). The loss is 0 when g_head + g_tail = 0.
    """
    mu = _check_unit("mu", mu)
    log_q, log_p = _log_probs(student_logits, teacher_logits, mask, reduction)
    with torch.no_grad():
        p = log_p.exp()
        gap = (p - log_q.exp()).abs()
        sorted_p, order = torch.sort(p, dim=-1, stable=True)
        tail = torch.zeros_like(p, dtype=torch.bool).scatter(-1, order, sorted_p.cumsum(-1) < mu)
        g_tail = torch.where(tail, gap, 0.0).sum(-1)
        g_head = torch.where(tail, 0.0, gap).sum(-1)
        denom = g_head + g_tail
        denom = torch.where(denom > 0, denom, 1.0)  # both gaps are 0 there
        w_head, w_tail = g_head / denom, g_tail / denom
    per_token = w_head * _kl(log_p, log_q) + w_tail * _kl(log_q, log_p)
    return _reduce(per_token, mask, reduction)


def taid_loss(student_logits, teacher_logits, mask, *, t, reduction="mean"):
    """TAID: KL(p_t‖q), p_t = softmax((1 − t)·stopgrad(z_student) + t·z_teacher), t in [0, 1].

    The gradient w.r.t. the student logits is (q − p_t) per kept token (divided by
    the number of kept tokens for ``reduction="mean"``).
    """
    t = _check_unit("t", t)
    z_s, z_t = _prepare(student_logits, teacher_logits, mask, reduction)
    log_q = torch.log_softmax(z_s, dim=-1)
    z_s = z_s.detach()
    # Endpoints are special-cased so that 0·(−inf) never appears.
    mixed = z_s if t == 0.0 else z_t if t == 1.0 else (1.0 - t) * z_s + t * z_t
    log_pt = torch.log_softmax(mixed, dim=-1)
    return _reduce(_kl(log_pt, log_q), mask, reduction)


def cross_entropy(student_logits, labels, mask, *, reduction="mean"):
    """Cross-entropy −log q[label] of the student on integer ``labels`` ``[...]``, reduced
    over kept tokens (labels at ignored positions may be anything, e.g. −100)."""
    _check_reduction(reduction)
    log_q = torch.log_softmax(_masked_logits(student_logits, mask), dim=-1)
    safe_labels = torch.where(mask.to(torch.bool), labels, 0).long()
    nll = -log_q.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    return _reduce(nll, mask, reduction)


LOSSES: dict[str, Callable[..., Tensor]] = {
    "taid": taid_loss,
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "tvd": tvd,
    "skew_forward_kl": skew_forward_kl,
    "skew_reverse_kl": skew_reverse_kl,
    "generalized_jsd": generalized_jsd,
    "adaptive_kl": adaptive_kl,
}


def get_loss(name: str) -> Callable[..., Tensor]:
    """Return the loss registered under ``name``; ValueError lists the known names."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}") from None


def loss_params(name: str, params: dict) -> dict:
    """Select from a flat ``params`` dict the keyword parameters loss ``name`` takes
    (``reduction`` excluded). A required parameter absent from ``params`` raises ValueError."""
    picked = {}
    for pname, spec in inspect.signature(get_loss(name)).parameters.items():
        if spec.kind is not inspect.Parameter.KEYWORD_ONLY or pname == "reduction":
            continue
        if pname in params:
            picked[pname] = params[pname]
        elif spec.default is inspect.Parameter.empty:
            raise ValueError(f"loss {name!r} requires parameter {pname!r}")
    return picked
