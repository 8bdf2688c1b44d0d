"""Losses of the self-supervised methods. Each is checked against a slow reference in tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent, SimCLR [Chen et al. 2020, eq. 1], averaged over all 2B anchors.

    ``z1``, ``z2``: (B, D) projections of two views; row i of each is a positive pair, every
    other row of both is a negative.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2B, D)
    sim = z @ z.T / temperature  # (2B, 2B)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    idx = torch.arange(n, device=z.device)
    targets = torch.cat([idx + n, idx])  # (2B,) index of each anchor's positive
    return F.cross_entropy(sim, targets)


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL [Grill et al. 2020, eq. 2]: 2 - 2 cos(p, z), with no gradient through the target z."""
    cos = F.cosine_similarity(p.float(), z.detach().float(), dim=-1)  # (B,)
    return (2 - 2 * cos).mean()


def dino_loss(
    student: list[torch.Tensor],
    teacher: list[torch.Tensor],
    center: torch.Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> torch.Tensor:
    """DINO [Caron et al. 2021, Algorithm 1]: cross-entropy H(teacher, student) over view pairs.

    ``student``: one (B, K) logit tensor per view (global views first); ``teacher``: one per
    global view. The teacher is centred by ``center`` (1, K) and sharpened by ``teacher_temp``;
    pairs where student and teacher see the same view are skipped.
    """
    t = [F.softmax((x.float() - center) / teacher_temp, dim=-1).detach() for x in teacher]
    s = [F.log_softmax(x.float() / student_temp, dim=-1) for x in student]
    terms = [
        -(ti * sj).sum(dim=-1).mean()  # (B,) -> ()
        for i, ti in enumerate(t)
        for j, sj in enumerate(s)
        if i != j
    ]
    return torch.stack(terms).mean()
