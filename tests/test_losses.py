"""Distillation losses checked against their formulas evaluated separately in numpy (float64)."""

import numpy as np
import pytest
import torch

from taid import losses as L

SHAPE = (2, 3, 7)
MASK = np.array([[True, False, True], [True, True, False]])
PARAMS = {"lam": 0.1, "beta": 0.3, "mu": 0.5, "t": 0.4}


# ----------------------------------------------------------------------------- numpy references
def np_softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def np_kl(a, b):
    """Σ a log(a / b) over the last axis with 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 0, a * (np.log(a) - np.log(b)), 0.0).sum(-1)


def np_adaptive(p, q, mu):
    out = []
    for pr, qr in zip(p, q):
        order = np.argsort(pr, kind="stable")
        cum = np.cumsum(pr[order])
        tail = np.zeros(len(pr), dtype=bool)
        for rank, v in enumerate(order):
            tail[v] = cum[rank] < mu
        gap = np.abs(pr - qr)
        g_tail, g_head = gap[tail].sum(), gap[~tail].sum()
        total = g_head + g_tail
        out.append(0.0 if total == 0 else (g_head * np_kl(pr, qr) + g_tail * np_kl(qr, pr)) / total)
    return np.array(out)


def np_taid(zs, zt, t):
    return np_kl(np_softmax((1 - t) * zs + t * zt), np_softmax(zs))


# per-token references on [N, V] logits (student, teacher)
REFS = {
    "forward_kl": lambda zs, zt, k: np_kl(np_softmax(zt), np_softmax(zs)),
    "reverse_kl": lambda zs, zt, k: np_kl(np_softmax(zs), np_softmax(zt)),
    "tvd": lambda zs, zt, k: 0.5 * np.abs(np_softmax(zt) - np_softmax(zs)).sum(-1),
    "skew_forward_kl": lambda zs, zt, k: np_kl(
        np_softmax(zt), k["lam"] * np_softmax(zt) + (1 - k["lam"]) * np_softmax(zs)
    ),
    "skew_reverse_kl": lambda zs, zt, k: np_kl(
        np_softmax(zs), k["lam"] * np_softmax(zs) + (1 - k["lam"]) * np_softmax(zt)
    ),
    "generalized_jsd": lambda zs, zt, k: (
        lambda p, q, b: b * np_kl(p, b * p + (1 - b) * q) + (1 - b) * np_kl(q, b * p + (1 - b) * q)
    )(np_softmax(zt), np_softmax(zs), k["beta"]),
    "adaptive_kl": lambda zs, zt, k: np_adaptive(np_softmax(zt), np_softmax(zs), k["mu"]),
    "taid": lambda zs, zt, k: np_taid(zs, zt, k["t"]),
}
NAMES = sorted(REFS)


def logits(seed, shape=SHAPE, scale=2.0):
    return np.random.default_rng(seed).normal(size=shape) * scale


def call(name, zs, zt, mask, reduction="mean", **override):
    kwargs = L.loss_params(name, {**PARAMS, **override})
    return L.get_loss(name)(zs, zt, mask, **kwargs, reduction=reduction)


def as_t(x, grad=False):
    return torch.tensor(x, dtype=torch.float32, requires_grad=grad)


# ----------------------------------------------------------------------------- value vs numpy
def test_registry_covers_references():
    assert set(L.LOSSES) == set(REFS)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_matches_numpy_with_partial_mask(name, reduction):
    zs, zt = logits(1), logits(2)
    per_token = REFS[name](zs[MASK], zt[MASK], PARAMS)
    expected = per_token.mean() if reduction == "mean" else per_token.sum()
    # garbage at ignored positions must not change the value
    zs_g, zt_g = zs.copy(), zt.copy()
    zs_g[~MASK], zt_g[~MASK] = np.nan, np.inf
    s = as_t(zs_g, grad=True)
    out = call(name, s, as_t(zt_g), torch.tensor(MASK), reduction)
    assert out.shape == () and out.dtype == torch.float32
    np.testing.assert_allclose(out.item(), expected, rtol=1e-5, atol=1e-6)
    out.backward()
    assert torch.isfinite(s.grad).all()
    assert (s.grad[torch.tensor(~MASK)] == 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_zero_when_equal_and_nonnegative(name):
    z = as_t(logits(3))
    full = torch.ones(SHAPE[:-1], dtype=torch.bool)
    assert abs(call(name, z, z.clone(), full).item()) < 1e-6
    for seed in range(4):
        assert call(name, as_t(logits(10 + seed)), as_t(logits(20 + seed)), full).item() >= 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_all_ignored_is_zero_with_zero_grad(name, reduction):
    s = torch.full(SHAPE, float("nan"), requires_grad=True)
    out = call(name, s, torch.full(SHAPE, float("nan")), torch.zeros(SHAPE[:-1], dtype=torch.bool), reduction)
    assert out.item() == 0.0
    out.backward()
    assert torch.equal(s.grad, torch.zeros(SHAPE))


@pytest.mark.parametrize("name", NAMES)
def test_bad_reduction_raises(name):
    with pytest.raises(ValueError):
        call(name, as_t(logits(1)), as_t(logits(2)), torch.tensor(MASK), "none")


@pytest.mark.parametrize("name", NAMES)
def test_bf16_inputs_softmax_in_fp32(name):
    zs, zt = as_t(logits(4)), as_t(logits(5))
    mask = torch.tensor(MASK)
    s16, t16 = zs.bfloat16(), zt.bfloat16()
    out16 = call(name, s16, t16, mask)
    assert out16.dtype == torch.float32
    # identical to the fp32 computation on the same (rounded) values ...
    np.testing.assert_allclose(out16.item(), call(name, s16.float(), t16.float(), mask).item(), rtol=1e-6)
    # ... and close to the unrounded fp32 inputs
    np.testing.assert_allclose(out16.item(), call(name, zs, zt, mask).item(), rtol=5e-2, atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_shared_neg_inf_vocab_entries_stay_finite(name):
    zs, zt = as_t(logits(6)), as_t(logits(7))
    zs[..., [1, 4]] = -torch.inf
    zt[..., [1, 4]] = -torch.inf
    zs.requires_grad_(True)
    out = call(name, zs, zt, torch.tensor(MASK))
    ref = REFS[name](logits(6)[MASK][:, [0, 2, 3, 5, 6]], logits(7)[MASK][:, [0, 2, 3, 5, 6]], PARAMS).mean()
    np.testing.assert_allclose(out.item(), ref, rtol=1e-5, atol=1e-6)
    out.backward()
    assert torch.isfinite(zs.grad).all()


# ----------------------------------------------------------------------------- taid
def test_taid_gradient_is_q_minus_pt():
    zs, zt, t = logits(8), logits(9), 0.35
    s = as_t(zs, grad=True)
    L.taid_loss(s, as_t(zt), torch.tensor(MASK), t=t).backward()
    expected = (np_softmax(zs) - np_softmax((1 - t) * zs + t * zt)) / MASK.sum()
    expected[~MASK] = 0.0
    np.testing.assert_allclose(s.grad.numpy(), expected, atol=1e-6)


def test_taid_endpoints():
    zs, zt, mask = as_t(logits(10)), as_t(logits(11)), torch.tensor(MASK)
    np.testing.assert_allclose(
        L.taid_loss(zs, zt, mask, t=1.0).item(), L.forward_kl(zs, zt, mask).item(), rtol=1e-6
    )
    s = zs.clone().requires_grad_(True)
    out = L.taid_loss(s, zt, mask, t=0.0)
    assert abs(out.item()) < 1e-7
    out.backward()
    assert s.grad.abs().max() < 1e-6


@pytest.mark.parametrize("t", [-0.1, 1.5])
def test_taid_t_out_of_range(t):
    with pytest.raises(ValueError):
        L.taid_loss(as_t(logits(1)), as_t(logits(2)), torch.tensor(MASK), t=t)


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0])
def test_neg_inf_teacher_entries(t):
    zs, zt = logits(12), logits(13)
    zt_inf = zt.copy()
    zt_inf[..., [0, 3]] = -np.inf
    keep = [1, 2, 4, 5, 6]
    mask = torch.tensor(MASK)
    s = as_t(zs, grad=True)
    # forward KL: teacher mass only on the remaining entries, student over the full vocabulary
    q = np_softmax(zs[MASK])
    p = np_softmax(zt[MASK][:, keep])
    fkl_ref = (p * (np.log(p) - np.log(q[:, keep]))).sum(-1).mean()
    np.testing.assert_allclose(L.forward_kl(s, as_t(zt_inf), mask).item(), fkl_ref, rtol=1e-5)
    # taid: the intermediate target is zero on the -inf entries (unless t = 0)
    out = L.taid_loss(s, as_t(zt_inf), mask, t=t)
    if t == 0.0:
        taid_ref = 0.0
    else:
        pt = np_softmax(((1 - t) * zs + t * zt)[MASK][:, keep])
        taid_ref = (pt * (np.log(pt) - np.log(q[:, keep]))).sum(-1).mean()
    np.testing.assert_allclose(out.item(), taid_ref, rtol=1e-5, atol=1e-7)
    out.backward()
    assert torch.isfinite(s.grad).all()


# ----------------------------------------------------------------------------- generalized JSD / skew
def test_generalized_jsd_endpoints_and_range():
    zs, zt, mask = as_t(logits(14)), as_t(logits(15)), torch.tensor(MASK)
    fkl, rkl = L.forward_kl(zs, zt, mask).item(), L.reverse_kl(zs, zt, mask).item()
    np.testing.assert_allclose(L.generalized_jsd(zs, zt, mask, beta=0.0).item(), fkl, rtol=1e-6)
    np.testing.assert_allclose(L.generalized_jsd(zs, zt, mask, beta=1.0).item(), rkl, rtol=1e-6)
    ref = REFS["generalized_jsd"](logits(14)[MASK], logits(15)[MASK], {"beta": 0.7}).mean()
    np.testing.assert_allclose(L.generalized_jsd(zs, zt, mask, beta=0.7).item(), ref, rtol=1e-5)
    for beta in (-0.01, 1.01):
        with pytest.raises(ValueError):
            L.generalized_jsd(zs, zt, mask, beta=beta)


def test_skew_endpoints():
    zs, zt, mask = as_t(logits(16)), as_t(logits(17)), torch.tensor(MASK)
    np.testing.assert_allclose(
        L.skew_forward_kl(zs, zt, mask, lam=0.0).item(), L.forward_kl(zs, zt, mask).item(), rtol=1e-6
    )
    np.testing.assert_allclose(
        L.skew_reverse_kl(zs, zt, mask, lam=0.0).item(), L.reverse_kl(zs, zt, mask).item(), rtol=1e-6
    )
    assert abs(L.skew_forward_kl(zs, zt, mask, lam=1.0).item()) < 1e-6


# ----------------------------------------------------------------------------- adaptive KL
def test_adaptive_kl_hand_built_unsorted():
    # teacher probs in vocabulary order; ascending order is 2 (0.05), 0 (0.1), 3 (0.35), 1 (0.5)
    p = np.array([0.1, 0.5, 0.05, 0.35])
    q = np.array([0.1, 0.05, 0.3, 0.55])
    # mu = 0.4: inclusive cumulative masses 0.05, 0.15, 0.5, 1.0 -> tail = {2, 0}, head = {3, 1}
    # |p - q| = [0, 0.45, 0.25, 0.2]: g_tail = 0 + 0.25, g_head = 0.45 + 0.2
    # (applying the sorted-order mask [T, T, F, F] to vocabulary order would give 0.45 / 0.45)
    fkl = sum(pi * np.log(pi / qi) for pi, qi in zip(p, q))
    rkl = sum(qi * np.log(qi / pi) for pi, qi in zip(p, q))
    expected = (0.65 * fkl + 0.25 * rkl) / 0.9
    wrong = (0.45 * fkl + 0.45 * rkl) / 0.9
    assert abs(expected - wrong) > 0.05
    out = L.adaptive_kl(as_t(np.log(q)[None]), as_t(np.log(p)[None]), torch.tensor([True]), mu=0.4)
    np.testing.assert_allclose(out.item(), expected, rtol=1e-5)


def test_adaptive_kl_weights_are_detached():
    zs, zt = logits(18), logits(19)
    s = as_t(zs, grad=True)
    L.adaptive_kl(s, as_t(zt), torch.tensor(MASK), mu=0.5).backward()
    p, q = np_softmax(zt[MASK]), np_softmax(zs[MASK])
    g_tail_head = []
    for pr, qr in zip(p, q):
        order = np.argsort(pr, kind="stable")
        tail = np.zeros(len(pr), dtype=bool)
        tail[order[np.cumsum(pr[order]) < 0.5]] = True
        g_tail_head.append((np.abs(pr - qr)[tail].sum(), np.abs(pr - qr)[~tail].sum()))
    gt, gh = np.array(g_tail_head).T
    w_h, w_t = gh / (gh + gt), gt / (gh + gt)
    # d KL(p||q)/dz = q - p ; d KL(q||p)/dz = q * (log q - log p - KL(q||p))
    rkl = np_kl(q, p)[:, None]
    grad = w_h[:, None] * (q - p) + w_t[:, None] * q * (np.log(q) - np.log(p) - rkl)
    expected = np.zeros(SHAPE)
    expected[MASK] = grad / MASK.sum()
    np.testing.assert_allclose(s.grad.numpy(), expected, atol=1e-6)


# ----------------------------------------------------------------------------- cross-entropy
def test_cross_entropy():
    zs = logits(20)
    labels = np.random.default_rng(21).integers(0, SHAPE[-1], size=SHAPE[:-1])
    labels[~MASK] = -100
    logq = np.log(np_softmax(zs))
    nll = -np.take_along_axis(logq, np.where(MASK, labels, 0)[..., None], -1)[..., 0][MASK]
    s = as_t(zs)
    mask = torch.tensor(MASK)
    np.testing.assert_allclose(L.cross_entropy(s, torch.tensor(labels), mask).item(), nll.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        L.cross_entropy(s, torch.tensor(labels), mask, reduction="sum").item(), nll.sum(), rtol=1e-5
    )


# ----------------------------------------------------------------------------- registry helpers
def test_get_loss_unknown_lists_names():
    assert L.get_loss("taid") is L.taid_loss
    with pytest.raises(ValueError) as err:
        L.get_loss("nope")
    assert "nope" in str(err.value)
    for name in L.LOSSES:
        assert name in str(err.value)


def test_loss_params_picks_keys():
    flat = {"lam": 0.2, "beta": 0.3, "mu": 0.6, "t": 0.1, "unrelated": 1}
    assert L.loss_params("skew_forward_kl", flat) == {"lam": 0.2}
    assert L.loss_params("skew_reverse_kl", flat) == {"lam": 0.2}
    assert L.loss_params("generalized_jsd", flat) == {"beta": 0.3}
    assert L.loss_params("adaptive_kl", flat) == {"mu": 0.6}
    assert L.loss_params("taid", flat) == {"t": 0.1}
    assert L.loss_params("forward_kl", flat) == {}
    assert L.loss_params("skew_forward_kl", {}) == {}  # defaults apply
    with pytest.raises(ValueError, match="'t'"):
        L.loss_params("taid", {"lam": 0.1})
    with pytest.raises(ValueError):
        L.loss_params("bogus", flat)
