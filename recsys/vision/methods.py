"""SimCLR, BYOL and DINO behind one interface, so one training loop serves all three.

A method is an ``nn.Module`` whose ``forward(views)`` returns the loss of one batch of views
(global views first, see ``BatchAugment``), with ``step_end(progress)`` called after every
optimiser step (EMA updates) and ``encoder`` the backbone whose features are the embedding.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recsys.errors import InvalidSettings
from recsys.vision.losses import byol_loss, dino_loss, nt_xent_loss

METHODS = ("simclr", "byol", "dino")


@dataclass(frozen=True)
class MethodConfig:
    # Width of the hidden layer and the output of the projection head.
    hidden_dim: int = 512
    proj_dim: int = 128
    # SimCLR's NT-Xent temperature.
    temperature: float = 0.2
    # BYOL / DINO: EMA momentum of the target (teacher), raised to 1 on a cosine schedule.
    momentum: float = 0.99
    # DINO: prototypes in the head, student / teacher temperatures, centre EMA momentum.
    dino_out_dim: int = 2048
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    center_momentum: float = 0.9


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear-BN-ReLU-Linear, the projection head of SimCLR and BYOL."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(),
        nn.Linear(hidden_dim, out_dim),
    )


def _ema_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameters and buffers."""
    with torch.no_grad():
        t_params, o_params = list(target.parameters()), list(online.parameters())
        torch._foreach_lerp_(t_params, o_params, 1 - momentum)
        for tb, ob in zip(target.buffers(), online.buffers(), strict=True):
            tb.copy_(ob)


def _frozen_copy(module: nn.Module) -> nn.Module:
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's target momentum schedule: ``base`` at the start, 1 at the end."""
    return 1 - (1 - base) * (math.cos(math.pi * min(progress, 1.0)) + 1) / 2


class SimCLR(nn.Module):
    """SimCLR [Chen et al. 2020]: contrast two views of each image against the rest of the batch."""

    def __init__(self, backbone: nn.Module, cfg: MethodConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.projector = mlp(backbone.out_dim, cfg.hidden_dim, cfg.proj_dim)

    @property
    def encoder(self) -> nn.Module:
        return self.backbone

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        """NT-Xent of the two global views; with local views (multi-crop [Caron et al.
        2020]), also of each local view against each global view, all pairs weighed alike."""
        z1, z2 = self.projector(self.backbone(torch.cat(views[:2]))).chunk(2)  # (B, P) each
        if len(views) == 2:
            return nt_xent_loss(z1, z2, self.cfg.temperature)
        local = self.projector(self.backbone(torch.cat(views[2:]))).chunk(len(views) - 2)
        pairs = [(z1, z2), *((g, z) for z in local for g in (z1, z2))]
        return torch.stack([nt_xent_loss(a, b, self.cfg.temperature) for a, b in pairs]).mean()

    def step_end(self, progress: float) -> None:
        """SimCLR has no target network."""


class BYOL(nn.Module):
    """BYOL [Grill et al. 2020]: predict an EMA target's projection of the other view."""

    def __init__(self, backbone: nn.Module, cfg: MethodConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.projector = mlp(backbone.out_dim, cfg.hidden_dim, cfg.proj_dim)
        self.predictor = mlp(cfg.proj_dim, cfg.hidden_dim, cfg.proj_dim)
        self.target_backbone = _frozen_copy(backbone)
        self.target_projector = _frozen_copy(self.projector)

    @property
    def encoder(self) -> nn.Module:
        return self.backbone

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(views[:2])  # (2B, C, S, S)
        p1, p2 = self.predictor(self.projector(self.backbone(x))).chunk(2)  # (B, P) each
        with torch.no_grad():
            z1, z2 = self.target_projector(self.target_backbone(x)).chunk(2)
        return (byol_loss(p1, z2) + byol_loss(p2, z1)) / 2

    def step_end(self, progress: float) -> None:
        m = cosine_momentum(self.cfg.momentum, progress)
        _ema_(self.target_backbone, self.backbone, m)
        _ema_(self.target_projector, self.projector, m)


class DINOHead(nn.Module):
    """MLP to a bottleneck, L2-normalised, then prototypes with unit-norm weights [DINO, sec. 3]."""

    def __init__(self, in_dim: int, cfg: MethodConfig) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, cfg.hidden_dim),
            nn.GELU(),
            nn.Linear(cfg.hidden_dim, cfg.proj_dim),
        )
        self.prototypes = nn.Parameter(torch.randn(cfg.dino_out_dim, cfg.proj_dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.normalize(self.mlp(x), dim=-1)  # (B, P)
        return h @ F.normalize(self.prototypes, dim=-1).T  # (B, K)


class DINO(nn.Module):
    """DINO [Caron et al. 2021]: self-distillation to an EMA teacher with centring and sharpening.

    Extra (local) views, when the augmentation makes them, go through the student only.
    """

    def __init__(self, backbone: nn.Module, cfg: MethodConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.head = DINOHead(backbone.out_dim, cfg)
        self.teacher_backbone = _frozen_copy(backbone)
        self.teacher_head = _frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(1, cfg.dino_out_dim))

    @property
    def encoder(self) -> nn.Module:
        return self.teacher_backbone

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        glob = torch.cat(views[:2])  # (2B, C, S, S)
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_backbone(glob)).float()  # (2B, K)
        student = list(self.head(self.backbone(glob)).chunk(2))
        if len(views) > 2:
            student += list(self.head(self.backbone(torch.cat(views[2:]))).chunk(len(views) - 2))
        loss = dino_loss(
            student,
            list(teacher.chunk(2)),
            self.center,
            self.cfg.student_temp,
            self.cfg.teacher_temp,
        )
        self._update_center(teacher)
        return loss

    @torch.no_grad()
    def _update_center(self, teacher: torch.Tensor) -> None:
        m = self.cfg.center_momentum
        self.center.mul_(m).add_(teacher.mean(dim=0, keepdim=True), alpha=1 - m)

    def step_end(self, progress: float) -> None:
        m = cosine_momentum(self.cfg.momentum, progress)
        _ema_(self.teacher_backbone, self.backbone, m)
        _ema_(self.teacher_head, self.head, m)


def build_method(name: str, backbone: nn.Module, cfg: MethodConfig) -> nn.Module:
    """The method ``name`` (one of ``METHODS``) around ``backbone``."""
    classes = {"simclr": SimCLR, "byol": BYOL, "dino": DINO}
    if name not in classes:
        raise InvalidSettings(f"method {name!r} is not one of {', '.join(METHODS)}")
    return classes[name](backbone, cfg)
