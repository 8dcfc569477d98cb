"""Preference losses over k-way matches, all on the same tensors.

Every loss takes
  ``scores``  (B, k) student scores (cosine similarity of persona text and each candidate image),
  ``teacher`` (B, k) the teacher's preference for each candidate (a distribution over the k
              candidates for soft judges; any monotone score for rankings: higher = preferred),
  ``mask``    (B, k) bool, False where a match was padded to k (optional),
and returns a scalar (mean over matches).

* ``bt``: Bradley-Terry / RankNet over all ordered pairs the teacher ranks (i above j):
  ``-sum log sigmoid(scale * (s_i - s_j))``. PAD uses raw cosine differences: ``scale=1``.
* ``listwise_kl``: KL(teacher || softmax(scale * s)) over the k candidates; ``scale`` is the
  inverse temperature, learnable in :class:`PreferenceLoss`.
* ``plackett_luce``: negative log-likelihood of the teacher's full ranking under a
  Plackett-Luce model with utilities ``scale * s``.
* ``anchor_penalty``: squared L2 distance of parameters to their starting values.
"""

from __future__ import annotations

import math
from typing import Iterable, Literal

import torch
import torch.nn.functional as F
from torch import nn

LossKind = Literal["bt", "listwise_kl", "plackett_luce"]


def _mask(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.to(torch.bool)


def bt(scores: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None,
       scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Bradley-Terry over all ordered pairs (teacher_i > teacher_j), summed per match, mean over matches."""
    m = _mask(scores, mask)
    diff = scale * (scores.unsqueeze(2) - scores.unsqueeze(1))              # (B, k, k): s_i - s_j
    pref = teacher.unsqueeze(2) > teacher.unsqueeze(1)                      # i preferred over j
    valid = pref & m.unsqueeze(2) & m.unsqueeze(1)
    per_pair = -F.logsigmoid(diff) * valid
    return per_pair.sum(dim=(1, 2)).mean()


def listwise_kl(scores: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None,
                scale: float | torch.Tensor = 1.0, eps: float = 1e-8) -> torch.Tensor:
    """KL(p_teacher || softmax(scale * s)) over the unmasked candidates, mean over matches."""
    m = _mask(scores, mask)
    p = torch.where(m, teacher.clamp_min(0), torch.zeros_like(teacher))
    p = p / p.sum(dim=1, keepdim=True).clamp_min(eps)
    logits = torch.where(m, scale * scores, torch.full_like(scores, -1e9))
    log_q = F.log_softmax(logits, dim=1)
    log_p = torch.log(p.clamp_min(eps))
    kl = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(dim=1)
    return kl.mean()


def plackett_luce(scores: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None,
                  scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """-log P(teacher's ranking) under Plackett-Luce with utilities ``scale * s``; mean over matches."""
    m = _mask(scores, mask)
    # rank by teacher (descending), padded candidates last
    key = torch.where(m, teacher.float(), torch.full_like(teacher, -math.inf, dtype=torch.float32))
    order = torch.argsort(key, dim=1, descending=True, stable=True)
    s = torch.gather(scale * scores, 1, order)
    mo = torch.gather(m, 1, order)
    s = torch.where(mo, s, torch.full_like(s, -1e9))
    # log sum_{j >= i} exp(s_j): reverse cumulative logsumexp
    tail = torch.logcumsumexp(s.flip(1), dim=1).flip(1)
    # the last ranked position has probability 1: contributes 0 either way
    nll = torch.where(mo, tail - s, torch.zeros_like(s)).sum(dim=1)
    return nll.mean()


LOSSES = {"bt": bt, "listwise_kl": listwise_kl, "plackett_luce": plackett_luce}


def anchor_penalty(params: Iterable[torch.Tensor], anchors: Iterable[torch.Tensor]) -> torch.Tensor:
    """sum ||theta - theta_0||^2 over parameters (anchors are detached copies of the start)."""
    total = None
    for p, a in zip(params, anchors):
        term = (p - a.to(p.device)).pow(2).sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


class PreferenceLoss(nn.Module):
    """One of the losses with its (optionally learnable) scale = inverse temperature.

    ``init_scale`` 1.0 with ``learn_scale`` False is PAD's raw-cosine BT. For softmax-based losses
    over cosines in [-1, 1] a larger scale (CLIP's 1/0.07 ~ 14) is the sensible start; the scale is
    learnt in log space and clamped to ``max_scale``.
    """

    def __init__(self, kind: LossKind = "listwise_kl", init_scale: float = 1.0, learn_scale: bool = False,
                 max_scale: float = 100.0):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; one of {sorted(LOSSES)}")
        self.kind = kind
        self.max_log_scale = math.log(max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)), requires_grad=learn_scale)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    def forward(self, scores: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return LOSSES[self.kind](scores, teacher, mask, scale=self.scale)
