"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no pyplot
state, no display needed). Each function writes one PNG and returns its path."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

log = logging.getLogger(__name__)

FUSED = "fused"
# Categories drawn in their own colour on the item map; the rest are grey.
MAP_CATEGORIES = 10


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=100)
    return path


def _style(name: str) -> dict:
    return {"linewidth": 3.0, "color": "black", "zorder": 3} if name == FUSED else {}


def curves(results: dict, ks: tuple[int, ...], metric: str, path: Path) -> Path:
    """``metric``@k against k, one line per contender (the fused model bold, black)."""
    figure = _figure(7.5, 4)
    axes = figure.add_subplot()
    for name, metrics in results.items():
        values = [metrics["overall"].get(f"{metric}@{k}", np.nan) for k in ks]
        axes.plot(ks, values, marker="o", label=name, **_style(name))
    axes.set(xlabel="k", ylabel=f"{metric}@k", title=f"{metric}@k, all items ranked")
    axes.set_xticks(list(ks))
    axes.grid(alpha=0.3)
    # beside the lines: inside, it covered the fused line on MovieLens' recall@k
    figure.legend(loc="outside right upper", fontsize=8)
    return _save(figure, path)


def headline(results: dict, k: int, path: Path) -> Path:
    """recall@k and cold-item recall@k side by side per contender: the result at a glance."""
    names = list(results)
    panels = (
        ("overall", f"recall@{k} (all items ranked)"),
        ("cold_items", f"cold-item recall@{k}"),
    )
    figure = _figure(10, 3.6)
    for position, (part, title) in enumerate(panels, 1):
        axes = figure.add_subplot(1, 2, position)
        values = [results[n][part].get(f"recall@{k}", np.nan) for n in names]
        colours = ["black" if n == FUSED else "tab:gray" for n in names]
        # by position: matplotlib leaves the names of NaN bars (no figure) off the axis
        axes.barh(np.arange(len(names)), np.nan_to_num(values), color=colours)
        axes.set_yticks(np.arange(len(names)), names)
        for y, (name, value) in enumerate(zip(names, values, strict=True)):
            if np.isfinite(value):
                axes.text(value, y, f" {value:.3f}", va="center", fontsize=8)
            elif results[name][part].get("tied"):  # one score for every new item: no figure
                axes.text(0, y, " n/a", va="center", fontsize=8)
        axes.invert_yaxis()
        axes.set_title(title)
        axes.set_xlim(0, np.nanmax([*values, 1e-3]) * 1.25)
    return _save(figure, path)


def segments(results: dict, k: int, path: Path) -> Path:
    """Grouped bars of recall@k per user segment and for warm-only / cold-only items."""
    names = list(results)
    first = results[names[0]]
    groups = [(f"users {s}", ("segments", s)) for s in first["segments"]]
    groups += [("warm items", ("warm_items", None)), ("cold items", ("cold_items", None))]
    figure = _figure(10, 4)
    axes = figure.add_subplot()
    width = 0.8 / len(names)
    for offset, name in enumerate(names):
        values = [_segment_value(results[name], where, k) for _, where in groups]
        x = np.arange(len(groups)) + offset * width
        colour = "black" if name == FUSED else None
        axes.bar(x, values, width, label=name, color=colour)
    labels = [f"{label}\n({_segment_users(first, where)} users)" for label, where in groups]
    axes.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, labels, fontsize=8)
    axes.set(ylabel=f"recall@{k}", title=f"recall@{k} by user history length and item kind")
    axes.legend(fontsize=8, ncols=2)
    axes.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def _segment_value(metrics: dict, where: tuple, k: int) -> float:
    part, key = where
    block = metrics[part][key] if key else metrics[part]
    return block.get(f"recall@{k}", np.nan)


def _segment_users(metrics: dict, where: tuple) -> int:
    part, key = where
    return (metrics[part][key] if key else metrics[part])["users"]


def item_map(
    vectors: np.ndarray, categories: np.ndarray, attribute: str, path: Path, seed: int = 0
) -> Path:
    """2-D PCA of item vectors (a seeded sample of at most 5,000), coloured by an attribute."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size=min(5000, len(vectors)), replace=False))
    points = _pca_2d(vectors[rows])  # (n, 2)
    labels = np.asarray([str(c) if c is not None else "(none)" for c in categories[rows]])
    values, counts = np.unique(labels, return_counts=True)
    shown = values[np.argsort(-counts, kind="stable")][:MAP_CATEGORIES]
    figure = _figure(7, 6)
    axes = figure.add_subplot()
    other = ~np.isin(labels, shown)
    axes.scatter(*points[other].T, s=4, color="lightgray", label="other")
    for value in shown:
        axes.scatter(*points[labels == value].T, s=4, label=value)
    axes.set(title=f"Item vectors (fused), PCA to 2-D, coloured by {attribute}")
    axes.set_xticks([]), axes.set_yticks([])
    axes.legend(fontsize=7, markerscale=3, loc="best")
    return _save(figure, path)


def _pca_2d(x: np.ndarray) -> np.ndarray:
    """Projection onto the two leading principal axes (eigenvectors of the (D, D) scatter
    matrix, sign fixed so that the plot does not flip between runs)."""
    centred = (x - x.mean(axis=0)).astype(np.float64)  # (n, D)
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    axes = vectors[:, ::-1][:, :2]  # (D, 2)
    axes = axes * np.where(axes[np.abs(axes).argmax(axis=0), [0, 1]] < 0, -1.0, 1.0)
    return centred @ axes


def similar_items(
    examples: list[list[int]], titles: list[str], images: list[str | None], path: Path
) -> Path:
    """One row per example: the query item, then its most similar items (image or title)."""
    columns = max(len(row) for row in examples)
    figure = _figure(1.7 * columns, 1.9 * len(examples))
    for r, row in enumerate(examples):
        for c, item in enumerate(row):
            axes = figure.add_subplot(len(examples), columns, r * columns + c + 1)
            _tile(axes, titles[item], images[item], query=c == 0)
    return _save(figure, path)


def _tile(axes, title: str, image: str | None, query: bool) -> None:
    """An item's image with its title above, or (without an image) its title in the box."""
    axes.set_xticks([]), axes.set_yticks([])
    if image:
        with Image.open(image) as picture:
            axes.imshow(np.asarray(picture.convert("RGB")))
        label = "\n".join(textwrap.wrap(title, 22)[:2])
    else:
        axes.text(0.5, 0.5, textwrap.fill(title, 16), ha="center", va="center", fontsize=7)
        label = ""
    axes.set_title(("query " if query else "") + label, fontsize=7)
    if query:
        for spine in axes.spines.values():
            spine.set(linewidth=2.5, color="tab:red")


def diversity(section: dict, path: Path) -> Path:
    """recall@k against intra-list diversity (left) and against the distinct values of the
    first attribute per list (right), one point per MMR λ, the rule's choice circled."""
    k, lambdas = section["k"], section["lambdas"]
    names = section["attributes"][:1]
    panels = [(f"diversity@{k}", f"intra-list diversity@{k} (mean pairwise content distance)")]
    panels += [
        (f"distinct_{name}@{k}", f"distinct {name} values per list of {k}") for name in names
    ]
    figure = _figure(5 * len(panels), 4)
    for position, (key, label) in enumerate(panels, 1):
        axes = figure.add_subplot(1, len(panels), position)
        x = [row[key] for row in lambdas.values()]
        y = [row[f"recall@{k}"] for row in lambdas.values()]
        axes.plot(x, y, marker="o", color="black")
        for lam, xi, yi in zip(lambdas, x, y, strict=True):
            chosen = float(lam) == section["chosen"]
            axes.annotate(
                f"λ={lam}" + (" (rule)" if chosen else ""),
                (xi, yi),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
            if chosen:
                axes.scatter([xi], [yi], s=160, facecolors="none", edgecolors="tab:red")
        axes.set(xlabel=label, ylabel=f"recall@{k}", title=f"MMR re-ranking: recall@{k} vs variety")
        axes.grid(alpha=0.3)
    return _save(figure, path)
