"""`recsys evaluate --labels`: the report's catalog-tasks section (evaluation.catalog_tasks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from recsys.evaluation import catalog_tasks
from recsys.evaluation.document import Document, to_markdown
from tests.test_catalog_intel import shapes


def test_catalog_tasks_section_scores_the_four_tasks_beside_the_baselines(tmp_path):
    """Two kinds of photo (shapes and their negatives), image vectors that know the kind."""
    base = shapes(150, seed=21)
    images = np.concatenate([base[:75], 255 - base[75:]])
    kind = np.r_[np.zeros(75, int), np.ones(75, int)]
    paths = []
    for n, pixels in enumerate(images):
        paths.append(str(tmp_path / f"{n}.png"))
        Image.fromarray(pixels).save(paths[-1])
    ids = np.array([f"i{n}" for n in range(150)])
    split = np.where(np.arange(150) % 3 == 0, "test", "train")
    labels = pd.DataFrame({"item_id": ids, "label": kind.astype(str), "split": split})
    vectors = np.eye(2)[kind] + 0.05 * np.random.default_rng(0).normal(size=(150, 2))

    section = catalog_tasks.evaluate(ids, pd.Series(paths), vectors, labels, seed=0)
    verified = "copy descriptor + verification"
    assert set(section["duplicates"]) == {"copy descriptor", verified, "raw pixels", "pHash 64-bit"}
    assert section["duplicates"]["copy descriptor"]["copy@1"] >= 0.8
    # The descriptor's candidates decided by their photos: every copy found, scored apart.
    checked = section["duplicates"][verified]
    assert checked["copy@1"] == 1.0 and checked["pair_f1"] == 1.0
    assert checked["verified_items"] == 50 + 10 and checked["best_threshold"] > 0.99
    assert section["outliers"]["image vectors"]["auroc"] > 0.9
    assert section["clusters"]["image vectors"]["nmi"] > 0.9
    few = section["few_labels"]["image vectors"]
    assert few["linear_accuracy"] > 0.9 and few["propagation_accuracy"] > 0.9
    assert "propagation_accuracy" not in section["few_labels"]["raw pixels"]

    metrics = {"images": {"catalog_tasks": section}}
    figures = catalog_tasks.figures(metrics, tmp_path)
    assert all(path.stat().st_size > 1000 for path in figures.values()) and len(figures) == 2
    doc = Document("report")
    catalog_tasks.render(doc, metrics, figures)
    markdown = to_markdown(doc, tmp_path)
    assert "## Catalog tasks" in markdown and "| copy descriptor |" in markdown
    assert f"| {verified} | 1.0000 | 1.0000 |" in markdown
    assert catalog_tasks.figures({}, tmp_path) == {}
