"""Tried for issue 14, not adopted: embedding at other sizes than the input size, and two
sizes averaged (multi-scale descriptors, as in image retrieval).

The backbone is fully convolutional with global pooling, so a model trained on 20 px views
of 28 px images embeds an image resized to any size. This embeds the gallery and the queries
at each ``--size`` (bilinear, antialiased when shrinking), then every pair of sizes with
their unit vectors summed, each whitened as ``fit`` whitens (refitted on that gallery), and
scores them with `scripts/eval_image_encoder.py`'s task. It scores a model that script saved
(``--model-dir DIR``):

    .venv/bin/python benchmarks/tried/embed_sizes.py --dataset fashion-mnist --load DIR \
        --size 28 --size 32 --size 36 --size 24
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import eval_image_encoder

from recsys.vision.encoder import fit_whitening


def embedded(enc, images, size: int, batch: int = 2048) -> np.ndarray:
    """Unit backbone vectors of ``images`` resized to ``size`` px."""
    cfg = enc.config_
    data = eval_image_encoder.as_uint8(images, cfg)
    mean = torch.tensor(enc.mean_).view(1, -1, 1, 1)
    std = torch.tensor(enc.std_).view(1, -1, 1, 1)
    backbone, out = enc.backbone_.eval(), []
    with torch.no_grad():
        for start in range(0, len(data), batch):
            x = data[start : start + batch].float() / 255
            if size != x.shape[-1]:
                shrink = size < x.shape[-1]
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=shrink)
            out.append(F.normalize(backbone((x - mean) / std), dim=1))
    return torch.cat(out).numpy()


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@click.command()
@eval_image_encoder.saved_model_options
@click.option("--size", "sizes", type=int, multiple=True, required=True, help="Repeatable.")
def main(dataset: str, data_dir: str | None, load_dir: str, sizes: tuple[int, ...]) -> None:
    """The task's scores at each size and each pair of sizes."""
    task, enc = eval_image_encoder.saved_model(dataset, data_dir, load_dir)
    cfg = enc.config_
    vectors = {}
    for size in sizes:
        queries = None if task.queries is None else embedded(enc, task.queries, size)
        vectors[(size,)] = embedded(enc, task.gallery, size), queries
    for pair in itertools.combinations(sizes, 2):
        gallery = unit(sum(vectors[(s,)][0] for s in pair))
        queries = None if task.queries is None else unit(sum(vectors[(s,)][1] for s in pair))
        vectors[pair] = gallery, queries
    for name, (gallery, queries) in vectors.items():
        whitening = fit_whitening(gallery, cfg.whiten, cfg.whiten_shrink)
        scored = eval_image_encoder.whitened_scores(task, gallery, queries, whitening)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in scored.items())
        click.echo(f"{' + '.join(map(str, name))} px: {shown}")


if __name__ == "__main__":
    main()
