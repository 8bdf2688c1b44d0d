"""Label-based scores of item vectors: weighted kNN accuracy and same-class precision@k.

Queries are scored against a gallery by cosine similarity (the vectors are L2-normalised
here), in chunks so that the (queries x gallery) similarity matrix never exists whole. With
``leave_one_out`` the queries are the gallery itself and each query's own row is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F


def _neighbours(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    leave_one_out: bool = False,
    chunk: int = 1024,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(similarities, gallery indices) of each chunk's ``k`` nearest gallery rows; with
    ``leave_one_out`` (queries are the gallery) query i never finds row i."""
    g = F.normalize(torch.as_tensor(gallery, dtype=torch.float32), dim=1)  # (G, D)
    q_all = F.normalize(torch.as_tensor(queries, dtype=torch.float32), dim=1)  # (Q, D)
    for start in range(0, len(q_all), chunk):
        sims = q_all[start : start + chunk] @ g.T  # (b, G)
        if leave_one_out:
            rows = torch.arange(len(sims))
            sims[rows, rows + start] = float("-inf")
        yield sims.topk(k, dim=1)  # (b, k) each


def knn_accuracy(
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Weighted kNN classification accuracy [Wu et al. 2018, InstDisc; as in DINO's eval].

    Each of the ``k`` nearest gallery items votes for its label with weight
    ``exp(cosine / temperature)``.
    """
    g_labels = torch.as_tensor(gallery_labels, dtype=torch.long)
    n_classes = int(max(g_labels.max(), int(np.max(query_labels)))) + 1
    predictions = []
    for sims, idx in _neighbours(queries, gallery, k):
        votes = torch.zeros(len(idx), n_classes)  # (b, classes)
        votes.scatter_add_(1, g_labels[idx], (sims / temperature).exp())
        predictions.append(votes.argmax(dim=1))
    return float((torch.cat(predictions).numpy() == np.asarray(query_labels)).mean())


def precision_at_k(
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    k: int = 10,
    leave_one_out: bool = False,
) -> float:
    """Mean fraction of each query's ``k`` nearest gallery items that share its label.

    ``leave_one_out``: ``queries`` are ``gallery`` (same rows, same order), and an item is
    not its own neighbour.
    """
    if leave_one_out and len(queries) != len(gallery):
        raise ValueError("leave_one_out needs the gallery itself as queries (same rows)")
    g_labels = torch.as_tensor(gallery_labels, dtype=torch.long)
    q_labels = torch.as_tensor(query_labels, dtype=torch.long)
    hits, start = [], 0
    for _, idx in _neighbours(queries, gallery, k, leave_one_out):
        own = q_labels[start : start + len(idx)]  # (b,)
        hits.append((g_labels[idx] == own[:, None]).float().mean(dim=1))
        start += len(idx)
    return float(torch.cat(hits).mean())
