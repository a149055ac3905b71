"""The chunked loss against the same loss on full logits: equal values and equal gradients."""

import pytest
import torch

from taid.chunked import LossSpec, chunked_loss
from taid.losses import LOSSES, cross_entropy
from taid.teachers import HeadLogits

N, H_STUDENT, H_TEACHER = 37, 6, 10
V_STUDENT, V_TEACHER = 19, 23
TOL = dict(rtol=2e-5, atol=2e-6)


def make_inputs(seed, dtype=torch.float64, v_student=V_STUDENT, v_teacher=V_TEACHER, n=N, label_max=None):
    g = torch.Generator().manual_seed(seed)
    student_hidden = torch.randn(n, H_STUDENT, generator=g, dtype=dtype)
    student_head = torch.randn(v_student, H_STUDENT, generator=g, dtype=dtype)
    teacher_hidden = torch.randn(n, H_TEACHER, generator=g, dtype=dtype)
    teacher_head = torch.randn(v_teacher, H_TEACHER, generator=g, dtype=dtype)
    labels = torch.randint(0, label_max or v_student, (n,), generator=g)
    mask = torch.rand(n, generator=g) < 0.7
    mask[0], mask[1], mask[-1] = True, False, True
    labels[~mask] = -100
    return student_hidden, student_head, teacher_hidden, teacher_head, labels, mask


def leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]


def live(teacher_hidden, teacher_head, n):
    """The teacher's logits over its first ``n`` output rows, slice by slice."""
    return None if teacher_hidden is None else HeadLogits(teacher_hidden, teacher_head[:n])


def chunked_with_grads(spec, student_hidden, student_head, teacher_hidden, teacher_head, labels, mask, chunk):
    h, w = leaves(student_hidden, student_head)
    n = spec.n_shared or student_head.shape[0]
    loss = chunked_loss(spec, h, w, live(teacher_hidden, teacher_head, n), labels, mask, chunk)
    loss.backward()
    return loss.detach(), h.grad, w.grad


def plain_with_grads(fn, student_hidden, student_head):
    """``fn(student_logits)`` on full logits, with autograd gradients w.r.t. hidden states and head."""
    h, w = leaves(student_hidden, student_head)
    loss = fn(h @ w.T)
    loss.backward()
    return loss.detach(), h.grad, w.grad


def assert_same(got, expected):
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **TOL)


def loss_kwargs(name):
    return {"t": 0.6} if name == "taid" else {}


# ----------------------------------------------------------------------------- every divergence
@pytest.mark.parametrize("chunk", [1, 8, 37, 100])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_chunked_equals_plain_for_every_loss(name, chunk):
    s_h, s_w, t_h, t_w, labels, mask = make_inputs(seed=1)
    fn, kw = LOSSES[name], loss_kwargs(name)
    spec = LossSpec(fn, kw)
    # n_shared unset: compare over the student's output size (the teacher head is larger)
    teacher_logits = t_h @ t_w[:V_STUDENT].T
    expected = plain_with_grads(lambda z: fn(z, teacher_logits, mask, **kw, reduction="sum"), s_h, s_w)
    assert expected[0] > 0
    got = chunked_with_grads(spec, s_h, s_w, t_h, t_w, labels, mask, chunk)
    assert_same(got, expected)
    # masked rows get no gradient
    assert torch.all(got[1][~mask] == 0)


def test_float32_inputs():
    s_h, s_w, t_h, t_w, labels, mask = make_inputs(seed=2, dtype=torch.float32)
    spec = LossSpec(LOSSES["taid"], {"t": 0.6})
    teacher_logits = t_h @ t_w[:V_STUDENT].T
    expected = plain_with_grads(lambda z: spec(z, teacher_logits, labels, mask), s_h, s_w)
    got = chunked_with_grads(spec, s_h, s_w, t_h, t_w, labels, mask, 8)
    assert_same(got, expected)


# ----------------------------------------------------------------------------- shared vocabulary
@pytest.mark.parametrize("chunk", [5, 37])
@pytest.mark.parametrize("name", ["taid", "forward_kl", "reverse_kl"])
def test_n_shared_compares_first_ids_only(name, chunk):
    n_shared = 17  # below both output sizes (student 19, teacher 23)
    s_h, s_w, t_h, t_w, labels, mask = make_inputs(seed=3)
    fn, kw = LOSSES[name], loss_kwargs(name)
    teacher_logits = t_h @ t_w.T  # all 23 teacher ids, sliced below
    expected = plain_with_grads(
        lambda z: fn(z[:, :n_shared], teacher_logits[:, :n_shared], mask, **kw, reduction="sum"), s_h, s_w
    )
    got = chunked_with_grads(LossSpec(fn, kw, n_shared=n_shared), s_h, s_w, t_h, t_w, labels, mask, chunk)
    assert_same(got, expected)
    grad_head = got[2]
    assert torch.all(grad_head[n_shared:] == 0)
    assert torch.all(grad_head[:n_shared].abs().sum(-1) > 0)


# ----------------------------------------------------------------------------- cross-entropy mixing
@pytest.mark.parametrize("chunk", [4, 100])
def test_pure_cross_entropy_needs_no_teacher(chunk):
    s_h, s_w, _, _, labels, mask = make_inputs(seed=4)
    spec = LossSpec(LOSSES["taid"], {"t": 0.6}, ce_weight=1.0)
    assert not spec.needs_teacher
    expected = plain_with_grads(lambda z: cross_entropy(z, labels, mask, reduction="sum"), s_h, s_w)
    got = chunked_with_grads(spec, s_h, s_w, None, None, labels, mask, chunk)
    assert_same(got, expected)


def test_cross_entropy_by_hand():
    # two tokens over three ids, the second ignored: loss = -log softmax(z0)[label0]
    z = torch.tensor([[1.0, 2.0, 0.5], [9.0, 9.0, 9.0]], dtype=torch.float64)
    hidden, head = z, torch.eye(3, dtype=torch.float64)  # logits = hidden @ I = z
    labels, mask = torch.tensor([2, -100]), torch.tensor([True, False])
    got = chunked_loss(LossSpec(LOSSES["forward_kl"], ce_weight=1.0), hidden, head, None, labels, mask, 1)
    expected = -(0.5 - torch.logsumexp(z[0], 0))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("n_shared", [None, 17])
def test_cross_entropy_weight_mixes_divergence_and_ce(n_shared):
    s_h, s_w, t_h, t_w, labels, mask = make_inputs(seed=5, label_max=17)
    n = n_shared or V_STUDENT
    teacher_logits = t_h @ t_w[:n].T

    def mixed(z):
        divergence = LOSSES["taid"](z[:, :n], teacher_logits, mask, t=0.6, reduction="sum")
        ce = cross_entropy(z, labels, mask, reduction="sum")  # over the student's full output
        return 0.7 * divergence + 0.3 * ce

    expected = plain_with_grads(mixed, s_h, s_w)
    spec = LossSpec(LOSSES["taid"], {"t": 0.6}, n_shared=n_shared, ce_weight=0.3)
    got = chunked_with_grads(spec, s_h, s_w, t_h, t_w, labels, mask, 6)
    assert_same(got, expected)


# ----------------------------------------------------------------------------- autograd plumbing
def test_upstream_gradient_and_non_leaf_hidden():
    s_h, s_w, t_h, t_w, labels, mask = make_inputs(seed=6)
    g = torch.Generator().manual_seed(60)
    x = torch.randn(N, 4, generator=g, dtype=torch.float64)
    proj = torch.randn(4, H_STUDENT, generator=g, dtype=torch.float64)
    spec = LossSpec(LOSSES["forward_kl"])
    teacher_logits = t_h @ t_w[:V_STUDENT].T

    def total(loss_of_hidden):
        p, w = leaves(proj, s_w)
        loss = 2.5 * loss_of_hidden(x @ p, w)
        loss.backward()
        return loss.detach(), p.grad, w.grad

    expected = total(lambda h, w: spec(h @ w.T, teacher_logits, labels, mask))
    got = total(lambda h, w: chunked_loss(spec, h, w, live(t_h, t_w, V_STUDENT), labels, mask, 7))
    assert_same(got, expected)


def test_frozen_head_gets_no_gradient():
    s_h, s_w, t_h, t_w, labels, mask = make_inputs(seed=7)
    spec = LossSpec(LOSSES["reverse_kl"])
    expected_grad = plain_with_grads(
        lambda z: spec(z, t_h @ t_w[:V_STUDENT].T, labels, mask), s_h, s_w
    )[1]
    h = s_h.clone().requires_grad_(True)
    chunked_loss(spec, h, s_w, live(t_h, t_w, V_STUDENT), labels, mask, 9).backward()
    assert s_w.grad is None
    torch.testing.assert_close(h.grad, expected_grad, **TOL)


def test_all_masked_gives_zero_and_zero_gradients():
    s_h, s_w, t_h, t_w, labels, _ = make_inputs(seed=8)
    mask = torch.zeros(N, dtype=torch.bool)
    for spec in (LossSpec(LOSSES["taid"], {"t": 0.6}), LossSpec(LOSSES["tvd"], ce_weight=0.5)):
        loss, grad_hidden, grad_head = chunked_with_grads(spec, s_h, s_w, t_h, t_w, labels, mask, 8)
        assert loss.item() == 0.0
        assert torch.all(grad_hidden == 0) and torch.all(grad_head == 0)


@pytest.mark.parametrize("chunk", [0, -1])
def test_bad_chunk_size_raises(chunk):
    s_h, s_w, t_h, t_w, labels, mask = make_inputs(seed=9)
    with pytest.raises(ValueError):
        chunked_loss(LossSpec(LOSSES["forward_kl"]), s_h, s_w, live(t_h, t_w, V_STUDENT), labels, mask, chunk)


# ----------------------------------------------------------------------------- memory
@pytest.mark.parametrize("chunk", [1, 8, 36])
def test_logits_never_exist_for_more_than_a_chunk(chunk):
    seen = []

    def spy(student_logits, teacher_logits, mask, *, reduction):
        seen.append((student_logits.shape[0], teacher_logits.shape[0]))
        return LOSSES["forward_kl"](student_logits, teacher_logits, mask, reduction=reduction)

    s_h, s_w, t_h, t_w, labels, mask = make_inputs(seed=10)
    chunked_loss(LossSpec(spy), s_h.requires_grad_(), s_w.requires_grad_(), live(t_h, t_w, V_STUDENT), labels,
                 mask, chunk)
    assert [rows for rows, _ in seen] == [min(chunk, N - start) for start in range(0, N, chunk)]
    assert all(s == t for s, t in seen)
