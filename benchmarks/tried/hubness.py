"""Tried for issue 14, not adopted: hubness correction of image-vector neighbours (CSLS).

Each gallery vector y gets r(y), its mean cosine to its ``kr`` nearest gallery vectors, and a
query ranks the gallery by cos(x, y) - beta * r(y) [Lample et al. 2018, "CSLS"; hubness
reduction in Feldbauer & Flexer 2019]. It scores a model that `scripts/eval_image_encoder.py
--model-dir DIR` saved, with that script's tasks:

    .venv/bin/python benchmarks/tried/hubness.py --dataset fashion-mnist --load DIR
    .venv/bin/python benchmarks/tried/hubness.py --dataset openmoji --data-dir DATA --load DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import eval_image_encoder


def _top(queries, gallery, k: int, leave_one_out: bool, penalty=None):
    """(cosines, gallery indices) of each query's ``k`` best by cosine - ``penalty``."""
    cosines, indices = [], []
    for start in range(0, len(queries), 1024):
        sims = queries[start : start + 1024] @ gallery.T  # (b, G)
        ranked = sims if penalty is None else sims - penalty[None, :]
        if leave_one_out:
            rows = torch.arange(len(sims))
            ranked[rows, rows + start] = float("-inf")
        idx = ranked.topk(k, dim=1).indices
        cosines.append(sims.gather(1, idx))
        indices.append(idx)
    return torch.cat(cosines), torch.cat(indices)


@click.command()
@eval_image_encoder.saved_model_options
def main(dataset: str, data_dir: str | None, load_dir: str) -> None:
    """P@10 (and kNN accuracy with queries) at each beta and neighbourhood size kr."""
    task, enc = eval_image_encoder.saved_model(dataset, data_dir, load_dir)
    gallery = F.normalize(torch.as_tensor(enc.transform(task.gallery)), dim=1)
    leave_one_out = task.queries is None
    queries = gallery
    if not leave_one_out:
        queries = F.normalize(torch.as_tensor(enc.transform(task.queries)), dim=1)
    for kr in (10, 50):
        hubness = _top(gallery, gallery, kr, True)[0].mean(dim=1)  # (G,) r(y)
        for beta in (0.0, 0.25, 0.5, 0.75, 1.0):
            cosines, idx = _top(queries, gallery, 20, leave_one_out, beta * hubness)
            for name, labels in task.gallery_labels.items():
                g = torch.as_tensor(labels)
                q = g if leave_one_out else torch.as_tensor(task.query_labels[name])
                p10 = (g[idx[:, :10]] == q[:, None]).float().mean()
                line = f"kr {kr} beta {beta:g} {name}: P@10 {p10:.4f}"
                if not leave_one_out:  # weighted 20-NN vote, as recsys.vision.evaluate
                    votes = torch.zeros(len(idx), int(g.max()) + 1)
                    votes.scatter_add_(1, g[idx], (cosines / 0.07).exp())
                    line += f", kNN {(votes.argmax(dim=1) == q).float().mean():.4f}"
                click.echo(line)


if __name__ == "__main__":
    main()
