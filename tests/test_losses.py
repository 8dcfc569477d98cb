"""Each loss against hand-computed values, with masks, and gradient signs."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses import PreferenceLoss, anchor_penalty, bt, listwise_kl, plackett_luce


def _ls(x: float) -> float:  # -log sigmoid(x)
    return math.log1p(math.exp(-x))


def test_bt_hand_computed():
    s = torch.tensor([[0.3, 0.1, 0.2]])
    t = torch.tensor([[0.6, 0.3, 0.1]])  # order 0 > 1 > 2
    want = _ls(0.3 - 0.1) + _ls(0.3 - 0.2) + _ls(0.1 - 0.2)
    assert bt(s, t).item() == pytest.approx(want, rel=1e-5)
    # scale multiplies differences
    want2 = _ls(2 * 0.2) + _ls(2 * 0.1) + _ls(2 * -0.1)
    assert bt(s, t, scale=2.0).item() == pytest.approx(want2, rel=1e-5)
    # a masked candidate drops its pairs; ties contribute nothing
    m = torch.tensor([[True, True, False]])
    assert bt(s, t, m).item() == pytest.approx(_ls(0.2), rel=1e-5)
    assert bt(s, torch.tensor([[0.5, 0.5, 0.0]])).item() == pytest.approx(_ls(0.1) + _ls(-0.1), rel=1e-5)


def test_bt_pad_ten_pairs_and_batch_mean():
    s = torch.zeros(2, 5)
    t = torch.tensor([[5, 4, 3, 2, 1], [1, 2, 3, 4, 5]], dtype=torch.float32)
    assert bt(s, t).item() == pytest.approx(10 * math.log(2), rel=1e-6)


def test_listwise_kl_hand_computed():
    s = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.75, 0.25]])
    q1 = math.exp(1) / (math.exp(1) + 1)
    want = 0.75 * math.log(0.75 / q1) + 0.25 * math.log(0.25 / (1 - q1))
    assert listwise_kl(s, p).item() == pytest.approx(want, abs=1e-7)
    # perfect match -> 0: teacher = softmax(scale * s)
    s2 = torch.tensor([[0.2, -0.1, 0.4]])
    assert listwise_kl(s2, torch.softmax(3 * s2, 1), scale=3.0).item() == pytest.approx(0.0, abs=1e-6)
    # masked candidate ignored and teacher renormalised over the rest
    s3 = torch.tensor([[1.0, 0.0, 5.0]])
    p3 = torch.tensor([[0.6, 0.2, 0.2]])
    m3 = torch.tensor([[True, True, False]])
    assert listwise_kl(s3, p3, m3).item() == pytest.approx(want, abs=1e-7)


def test_plackett_luce_hand_computed():
    s = torch.tensor([[0.5, 0.0, 1.0]])
    t = torch.tensor([[0.2, 0.1, 0.7]])  # ranking: 2, 0, 1
    e = [math.exp(x) for x in (0.5, 0.0, 1.0)]
    want = -(math.log(e[2] / sum(e)) + math.log(e[0] / (e[0] + e[1])))
    assert plackett_luce(s, t).item() == pytest.approx(want, rel=1e-5)
    m = torch.tensor([[True, False, True]])  # ranking 2, 0 only
    want_m = -math.log(e[2] / (e[2] + e[0]))
    assert plackett_luce(s, t, m).item() == pytest.approx(want_m, rel=1e-5)
    # k = 2 PL equals BT on the single pair
    s2, t2 = torch.tensor([[0.3, 0.1]]), torch.tensor([[0.9, 0.1]])
    assert plackett_luce(s2, t2).item() == pytest.approx(bt(s2, t2).item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["bt", "listwise_kl", "plackett_luce"])
def test_gradient_signs(kind):
    """Descending the loss raises the teacher's favourite and lowers its least favourite."""
    s = torch.zeros(1, 5, requires_grad=True)
    t = torch.tensor([[0.4, 0.1, 0.3, 0.15, 0.05]])
    PreferenceLoss(kind)(s, t).backward()
    g = s.grad[0]
    assert g[0] < 0 and g[4] > 0  # -grad points up for the best, down for the worst
    assert g[0] < g[2] < g[4]


def test_learnable_scale_and_anchor():
    loss = PreferenceLoss("listwise_kl", init_scale=10.0, learn_scale=True)
    s = torch.tensor([[0.1, 0.0]], requires_grad=True)
    t = torch.tensor([[0.99, 0.01]])
    loss(s, t).backward()
    assert loss.log_scale.grad is not None and loss.log_scale.grad < 0  # sharper is better here
    assert loss.scale.item() == pytest.approx(10.0, rel=1e-5)
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    a = torch.tensor([0.0, 2.0])
    pen = anchor_penalty([p], [a])
    assert pen.item() == pytest.approx(1.0)
    pen.backward()
    assert p.grad.tolist() == [2.0, 0.0]
