"""The fast losses and metrics against slow, obvious references on random inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys.vision.evaluate import knn_accuracy, precision_at_k
from recsys.vision.losses import byol_loss, dino_loss, nt_xent_loss


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def nt_xent_reference(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    """SimCLR eq. 1 written out: one anchor at a time, loop over every other sample."""
    z = [_unit(v) for v in np.concatenate([z1, z2])]
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denominator = sum(math.exp(z[i] @ z[k] / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(z[i] @ z[positive] / t) / denominator)
    return total / (2 * n)


def byol_reference(p: np.ndarray, z: np.ndarray) -> float:
    return float(np.mean([2 - 2 * _unit(a) @ _unit(b) for a, b in zip(p, z, strict=True)]))


def softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def dino_reference(student, teacher, center, ts, tt) -> float:
    terms = []
    for i, t in enumerate(teacher):
        for j, s in enumerate(student):
            if i == j:
                continue
            per_sample = [
                -np.sum(softmax((t[b] - center) / tt) * np.log(softmax(s[b] / ts)))
                for b in range(len(t))
            ]
            terms.append(np.mean(per_sample))
    return float(np.mean(terms))


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_reference(temperature):
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    fast = nt_xent_loss(torch.tensor(z1), torch.tensor(z2), temperature)
    assert float(fast) == pytest.approx(nt_xent_reference(z1, z2, temperature), rel=1e-5)


def test_nt_xent_trains_under_bf16_autocast():
    # the training loop's bf16 forward: the loss is the fp32 one, to bf16's precision
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(16, 16, generator=generator, requires_grad=True)
    x1, x2 = torch.randn(32, 16, generator=generator), torch.randn(32, 16, generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nt_xent_loss(x1 @ w, x2 @ w, 0.2)
    loss.backward()
    exact = nt_xent_loss(x1 @ w.detach(), x2 @ w.detach(), 0.2)
    assert float(loss.detach()) == pytest.approx(float(exact.detach()), rel=0.02)
    assert w.grad is not None and float(w.grad.abs().sum()) > 0


def test_nt_xent_is_low_for_identical_views_and_high_for_unrelated():
    z = torch.randn(32, 16)
    assert nt_xent_loss(z, z, 0.1) < nt_xent_loss(z, torch.randn(32, 16), 0.1)


def test_byol_matches_reference_and_stops_target_gradient():
    rng = np.random.default_rng(1)
    p_np, z_np = rng.normal(size=(7, 4)), rng.normal(size=(7, 4))
    p = torch.tensor(p_np, requires_grad=True)
    z = torch.tensor(z_np, requires_grad=True)
    loss = byol_loss(p, z)
    assert float(loss.detach()) == pytest.approx(byol_reference(p_np, z_np), rel=1e-5)
    loss.backward()
    assert z.grad is None and p.grad is not None


@pytest.mark.parametrize("n_local", [0, 2])
def test_dino_matches_reference(n_local):
    rng = np.random.default_rng(2)
    student = [rng.normal(size=(4, 9)) for _ in range(2 + n_local)]
    teacher = [rng.normal(size=(4, 9)) for _ in range(2)]
    center = rng.normal(size=(1, 9)) * 0.1
    fast = dino_loss(
        [torch.tensor(s) for s in student],
        [torch.tensor(t) for t in teacher],
        torch.tensor(center),
        0.1,
        0.04,
    )
    expected = dino_reference(student, teacher, center[0], 0.1, 0.04)
    assert float(fast) == pytest.approx(expected, rel=1e-5)


def knn_reference(q, q_y, g, g_y, k, t):
    correct = 0
    for v, y in zip(q, q_y, strict=True):
        sims = [float(_unit(v) @ _unit(w)) for w in g]
        order = sorted(range(len(g)), key=lambda i: -sims[i])[:k]
        votes: dict[int, float] = {}
        for i in order:
            votes[int(g_y[i])] = votes.get(int(g_y[i]), 0.0) + math.exp(sims[i] / t)
        correct += max(votes, key=votes.get) == y
    return correct / len(q)


def precision_reference(q, q_y, g, g_y, k):
    scores = []
    for v, y in zip(q, q_y, strict=True):
        sims = [float(_unit(v) @ _unit(w)) for w in g]
        order = sorted(range(len(g)), key=lambda i: -sims[i])[:k]
        scores.append(np.mean([g_y[i] == y for i in order]))
    return float(np.mean(scores))


def test_knn_accuracy_and_precision_match_references():
    rng = np.random.default_rng(3)
    g, g_y = rng.normal(size=(60, 6)), rng.integers(0, 4, 60)
    q, q_y = rng.normal(size=(25, 6)), rng.integers(0, 4, 25)
    assert knn_accuracy(q, q_y, g, g_y, k=7, temperature=0.5) == pytest.approx(
        knn_reference(q, q_y, g, g_y, 7, 0.5)
    )
    assert precision_at_k(q, q_y, g, g_y, k=5) == pytest.approx(
        precision_reference(q, q_y, g, g_y, 5)
    )


def leave_one_out_reference(x, y, k):
    scores = []
    for j, (v, label) in enumerate(zip(x, y, strict=True)):
        others = [i for i in range(len(x)) if i != j]
        order = sorted(others, key=lambda i: -float(_unit(v) @ _unit(x[i])))[:k]
        scores.append(np.mean([y[i] == label for i in order]))
    return float(np.mean(scores))


def test_leave_one_out_precision_matches_its_reference_and_never_counts_the_query():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(70, 5)), rng.integers(0, 3, 70)
    fast = precision_at_k(x, y, x, y, k=5, leave_one_out=True)
    assert fast == pytest.approx(leave_one_out_reference(x, y, 5))
    unique = np.arange(70)  # every item its own label: only the query itself could match
    assert precision_at_k(x, unique, x, unique, k=3, leave_one_out=True) == 0.0
