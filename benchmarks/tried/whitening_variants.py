"""Tried for issue 14, not adopted: the whitening's shrinkage and a cut to the main axes.

Scores a model that `scripts/eval_image_encoder.py --model-dir DIR` saved, with that
script's tasks, under whitenings refitted on its gallery's vectors at each power (0.5 is the
default), shrinkage (``ImageEncoderConfig.whiten_shrink``, 0.01 by default) and number of
principal axes kept (all 256 by default; fewer drops the smallest-variance ones, as
Jégou & Chum 2012 do), nothing retrained:

    .venv/bin/python benchmarks/tried/whitening_variants.py --dataset fashion-mnist --load DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import eval_image_encoder


def whitening(vectors: np.ndarray, power: float, shrink: float, keep: int):
    """``fit_whitening``'s (mean, projection), keeping the ``keep`` largest axes."""
    mean = vectors.mean(axis=0, dtype=np.float64)
    variance, basis = np.linalg.eigh(np.cov(vectors - mean, rowvar=False))  # ascending
    variance = np.clip(variance, 0.0, None)
    scale = (variance + shrink * variance.mean()) ** (-power / 2)
    return mean.astype(np.float32), (basis * scale)[:, -keep:].astype(np.float32)


@click.command()
@eval_image_encoder.saved_model_options
def main(dataset: str, data_dir: str | None, load_dir: str) -> None:
    """P@10 (and kNN accuracy with queries) at each power, shrinkage and axes kept."""
    task, enc = eval_image_encoder.saved_model(dataset, data_dir, load_dir)
    gallery, queries = eval_image_encoder.unwhitened(task, enc)
    d = gallery.shape[1]
    for power in (0.5, 0.75):
        for shrink in (0.001, 0.01, 0.03, 0.1):
            for keep in (d, 3 * d // 4, d // 2, d // 4):
                fitted = whitening(gallery, power, shrink, keep)
                got = eval_image_encoder.whitened_scores(task, gallery, queries, fitted)
                scores = ", ".join(f"{name} {value:.4f}" for name, value in got.items())
                click.echo(f"power {power} shrink {shrink} keep {keep}: {scores}")


if __name__ == "__main__":
    main()
