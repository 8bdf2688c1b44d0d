"""Label-based scores of item vectors: weighted kNN accuracy and same-class precision@k.

Queries are scored against a gallery by cosine similarity (the vectors are L2-normalised
here), in chunks so that the (queries x gallery) similarity matrix never exists whole.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F


def _neighbours(
    queries: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 1024
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(similarities, gallery indices) of each chunk's ``k`` nearest gallery rows."""
    g = F.normalize(torch.as_tensor(gallery, dtype=torch.float32), dim=1)  # (G, D)
    q_all = F.normalize(torch.as_tensor(queries, dtype=torch.float32), dim=1)  # (Q, D)
    for q in q_all.split(chunk):
        yield (q @ g.T).topk(k, dim=1)  # (b, k) each


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
) -> float:
    """Mean fraction of each query's ``k`` nearest gallery items that share its label."""
    g_labels = torch.as_tensor(gallery_labels, dtype=torch.long)
    q_labels = torch.as_tensor(query_labels, dtype=torch.long)
    hits, start = [], 0
    for _, idx in _neighbours(queries, gallery, k):
        own = q_labels[start : start + len(idx)]  # (b,)
        hits.append((g_labels[idx] == own[:, None]).float().mean(dim=1))
        start += len(idx)
    return float(torch.cat(hits).mean())
