"""The evaluation report: ``<out>/<timestamp>/`` with report.md, report.html (self-contained),
metrics.json and plots/*.png.

metrics.json holds only what the seed determines (no times, no paths), so two runs with the
same seed on the same catalog write identical files. The directory is written under a hidden
temporary name and renamed, so a reader never sees half a report.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from recsys.evaluation import catalog_tasks, plots
from recsys.evaluation import parts as parts_rule
from recsys.evaluation.document import Bold, Document, to_html, to_markdown
from recsys.evaluation.replay import disagreement, not_stored, unknown_said
from recsys.files import as_if_plain
from recsys.model.ranking import RANKING_METRICS

log = logging.getLogger(__name__)

COLUMNS = (*RANKING_METRICS, "coverage", "popularity")
# Shown for the cold-item figures of a contender that gave every new item one score.
NOT_RANKED = "n/a"


@dataclass
class ReportInputs:
    metrics: dict  # -> metrics.json
    seconds: dict[str, dict[str, float]]  # contender -> fit / score seconds
    headline_k: int
    item_vectors: np.ndarray  # (I, D) fused item vectors for the map
    map_attribute: str
    map_categories: np.ndarray  # (I,) the value each item is coloured by
    examples: list[list[int]]  # rows: query item row, then its similar items
    titles: list[str]
    images: list[str | None]
    seed: int = 0
    command: str | None = None


def write_report(out_dir: Path, inputs: ReportInputs) -> Path:
    """Write the report directory and return its path."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stamp}.", dir=out_dir))
    try:
        as_if_plain(tmp)
        (tmp / "plots").mkdir()
        figures = _figures(tmp / "plots", inputs)
        (tmp / "metrics.json").write_text(json.dumps(_clean(inputs.metrics), indent=2) + "\n")
        doc = _document(inputs, figures, stamp)
        (tmp / "report.md").write_text(to_markdown(doc, tmp))
        (tmp / "report.html").write_text(to_html(doc))
        final = _free_name(out_dir / stamp)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def write_replay_report(out_dir: Path, metrics: dict, command: str | None) -> Path:
    """``out_dir/<timestamp>/`` with report.md, report.html and metrics.json of a log replay
    (``recsys.evaluation.replay``), written under a temporary name and renamed."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stamp}.", dir=out_dir))
    try:
        as_if_plain(tmp)
        (tmp / "metrics.json").write_text(json.dumps(_clean(metrics), indent=2) + "\n")
        doc = Document(f"Log replay through the service {stamp}")
        _replay(doc, metrics["replay"])
        if command:
            doc.paragraph("Command:")
            doc.code(command)
        _replay_definitions(doc, metrics["replay"]["k"])
        (tmp / "report.md").write_text(to_markdown(doc, tmp))
        (tmp / "report.html").write_text(to_html(doc))
        final = _free_name(out_dir / f"replay-{stamp}")
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _replay(doc: Document, section: dict) -> None:
    k, parts, metrics = section["k"], ("feed", "feed_first"), ("hit_rate", "mrr")
    doc.heading("Log replay through the served path")
    doc.paragraph(
        f"{section['events']:,} held-out events of {section['users']:,} users "
        f"({section['source']}), replayed in time order against {section['service']} "
        f"(model {section['model_version']}). Each answer is scored against the event's item."
    )
    if said := unknown_said(section):
        doc.paragraph(said)
    passes = (
        ("offline", "in-process, same bundle (Recommender.recommend)"),
        ("feeds", "service, feeds only (nothing posted)"),
        ("posting", "service, each event posted after asking (fresh events folded in)"),
    )
    rows = []
    for name, label in passes:
        if name in section and section[name]["feed"].get("events"):
            values = [_fmt(section[name][part].get(m)) for part in parts for m in metrics]
            rows.append([label, f"{section[name]['feed']['events']:,}", *values])
    first = next(section[n]["feed_first"]["events"] for n, _ in passes if n in section)
    header = ["home feed", "events", f"next-event hit rate@{k}", f"MRR@{k}"]
    header += [f"next-event hit rate@{k}, first events ({first:,})", f"MRR@{k}, first events"]
    doc.table(header, rows)
    if said := disagreement(section):
        doc.paragraph(f"**Warning.** {said}")
    similar = section.get("posting", {}).get("similar", {})
    if similar.get("events"):
        doc.table(
            ["previous item's similar items", "events", f"next-event hit rate@{k}", f"MRR@{k}"],
            [
                [
                    "service",
                    f"{similar['events']:,}",
                    _fmt(similar["hit_rate"]),
                    _fmt(similar["mrr"]),
                ]
            ],
        )
    if "posting" in section:
        gain = {
            part: section["posting"][part]["hit_rate"] - section["feeds"][part]["hit_rate"]
            for part in parts
        }
        doc.paragraph(
            f"Folding in fresh events changes the feed's next-event hit rate@{k} by "
            f"{gain['feed']:+.4f} over all events and by {gain['feed_first']:+.4f} over first "
            "events (posting pass against the feeds-only pass). First events: each user and "
            "item's first event in the replay; a later one (a view, then a purchase) cannot "
            "be a hit once the first was posted, since seen items are not listed."
        )
        if said := not_stored(section["posting"].get("rejected", {})):
            doc.paragraph(said)


def _replay_definitions(doc: Document, k: int) -> None:
    """The replay's figures are per event: its hit rate is not the offline report's (a
    share of users), and the report did not say so."""
    doc.heading("Definitions")
    doc.bullets(
        [
            f"next-event hit rate@{k}: the share of replayed events whose item was among the "
            f"{k} items the service listed just before the event (the user's feed; for the "
            "similar items, the user's previous item's). Not the offline report's hit "
            f"rate@{k}, the share of users with any held-out item in their top {k}.",
            f"MRR@{k}: the mean over events of 1 / the item's rank in that list (0 when not "
            "listed).",
            "first events: each (user, item) pair's first event in the replay; a later one "
            "cannot be a hit once the first was posted, since seen items are not listed.",
            "in-process: the same bundle asked in this process (Recommender.recommend); "
            "feeds only: the service asked, nothing posted; posting: each event posted after "
            "asking, so later feeds fold it in.",
        ]
    )


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _clean(value):
    """JSON-safe: NaN -> null, numpy scalars -> Python, floats to 6 decimals."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    if isinstance(value, Path):
        return str(value)
    return value


def _figures(directory: Path, inputs: ReportInputs) -> dict[str, Path]:
    results, k = inputs.metrics["contenders"], inputs.headline_k
    ks = tuple(inputs.metrics["config"]["ks"])
    figures = {}
    if results:
        figures["headline"] = plots.headline(results, k, directory / "headline.png")
        figures["recall"] = plots.curves(results, ks, "recall", directory / "recall_at_k.png")
        figures["ndcg"] = plots.curves(results, ks, "ndcg", directory / "ndcg_at_k.png")
        figures["segments"] = plots.segments(results, k, directory / "segments.png")
    if "diversity" in inputs.metrics:
        figures["diversity"] = plots.diversity(
            inputs.metrics["diversity"], directory / "diversity.png"
        )
    figures["map"] = plots.item_map(
        inputs.item_vectors,
        inputs.map_categories,
        inputs.map_attribute,
        directory / "item_map.png",
        inputs.seed,
    )
    figures.update(catalog_tasks.figures(inputs.metrics, directory))
    if inputs.examples:
        figures["similar"] = plots.similar_items(
            inputs.examples, inputs.titles, inputs.images, directory / "similar_items.png"
        )
    return figures


def _document(inputs: ReportInputs, figures: dict[str, Path], stamp: str) -> Document:
    doc = Document(f"Offline evaluation {stamp}")
    metrics = inputs.metrics
    if metrics["contenders"]:
        _glance(doc, inputs, figures)
    _data(doc, metrics)
    if metrics["contenders"]:
        _at_each_k(doc, inputs, figures)
        _segments(doc, inputs, figures)
    if "diversity" in metrics:
        _diversity(doc, metrics["diversity"], figures)
    if metrics.get("item_to_item", {}).get("rankers"):
        _item_to_item(doc, metrics["item_to_item"])
    if "images" in metrics:
        _images(doc, metrics["images"])
    catalog_tasks.render(doc, metrics, figures)
    _vectors(doc, inputs, figures)
    _configuration(doc, inputs)
    _definitions(doc)
    return doc


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _column(
    results: dict, values: dict[str, float | None], tied: frozenset[str] = frozenset()
) -> dict[str, str | Bold]:
    """Formatted values with the highest one in bold; "n/a" for the contenders in ``tied``."""
    known = {n: v for n, v in values.items() if v is not None}
    top = max(known.values()) if known else None
    column = {
        n: Bold(_fmt(v)) if v is not None and v == top else _fmt(v) for n, v in values.items()
    }
    return {n: NOT_RANKED if n in tied else shown for n, shown in column.items()}


def _cold_tied(results: dict) -> frozenset[str]:
    """The contenders that gave every new item one score: no cold-item figures."""
    return frozenset(n for n, r in results.items() if r["cold_items"].get("tied"))


# Fewer evaluated users than this and the figures are mostly noise (a standard error of a
# recall near 0.5 is about 0.5 / sqrt(users)).
FEW_USERS = 50


def small_data_warnings(task: dict, k: int) -> list[str]:
    """What makes a split too small for its figures to mean much: a handful of users, or no
    more new items than the cut-off (every contender then lists them all: recall 1). The CLI
    prints them and the report leads with them (an 8-user run's report named BPR the best
    peer in bold with no word of it)."""
    users, cold = task.get("evaluated_users", 0), task.get("cold_items", 0)
    cold = cold if task.get("users_holding_cold_items", 0) else 0  # not measured: n/a says so
    said = []
    if 0 < users < FEW_USERS:
        said.append(
            f"only {users} {'user holds' if users == 1 else 'users hold'} events out: "
            "these figures are mostly noise; more shoppers' events make them mean something"
        )
    if 0 < cold <= k:
        said.append(
            f"{cold} {'item has' if cold == 1 else 'items have'} no training events, "
            f"no more than k={k}: every contender lists them all among new items, so "
            f"cold-item recall@{k} says nothing here"
        )
    return said


def _glance(doc: Document, inputs: ReportInputs, figures) -> None:
    results, k = inputs.metrics["contenders"], inputs.headline_k
    doc.heading("At a glance")
    for said in small_data_warnings(inputs.metrics.get("task") or {}, k):
        doc.paragraph(f"**Warning**: {said}.")
    doc.paragraph(_verdict(results, k))
    if inputs.metrics["data"].get("user_sample"):
        doc.paragraph(_sampled(inputs.metrics["data"]["user_sample"]))
    warm = _column(results, {n: r["overall"].get(f"recall@{k}") for n, r in results.items()})
    cold = _column(
        results,
        {n: r["cold_items"].get(f"recall@{k}") for n, r in results.items()},
        _cold_tied(results),
    )
    ndcg = _column(results, {n: r["overall"].get(f"ndcg@{k}") for n, r in results.items()})
    rows = []
    for name, r in results.items():
        seconds = inputs.seconds.get(name, {})
        # bold marks the best figures: fused's row, always bold, read as the best contender
        label = f"{name} (this product)" if name == plots.FUSED else name
        rows.append(
            [
                label,
                warm[name],
                cold[name],
                ndcg[name],
                _fmt(r["overall"].get(f"coverage@{k}")),
                _fmt(r["overall"].get(f"popularity@{k}"), 1),
                _fmt(seconds.get("fit"), 1),
            ]
        )
    header = [
        "contender",
        f"recall@{k}",
        f"cold-item recall@{k}",
        f"nDCG@{k}",
        f"coverage@{k}",
        f"popularity@{k}",
        "fit s",
    ]
    doc.table(header, rows)
    doc.image(figures["headline"], "recall and cold-item recall per contender")
    if inputs.metrics.get("against_parts"):
        _against_parts(doc, inputs.metrics["against_parts"])


def _against_parts(doc: Document, section: dict) -> None:
    """The fused model against its best collaborative and best content contender, paired."""
    k, rows = section["k"], []
    for key, label, kind in (
        ("warm", f"recall@{k}", "collaborative"),
        ("cold", f"cold-item recall@{k}", "content"),
    ):
        found = section.get(key)
        if not found:
            continue
        noise = "significant" if found["significant"] else "not significant"
        noise = f"{noise} at {section['z']:g} standard errors"
        if found["users"] < 2:
            noise = "one user: no standard error"
        rows.append(
            [
                label,
                f"{found['part']} ({kind})",
                _fmt(found["fused"]),
                _fmt(found["other"]),
                f"{found['difference']:+.4f}",
                _fmt(found["stderr"]),
                f"{found['users']:,}",
                f"{found['verdict']} ({noise})",
            ]
        )
    if not rows:
        return
    doc.heading("The fused model against its parts", 3)
    doc.paragraph(
        "Paired per user on this split: the difference is fused minus the best part, its "
        "standard error that of the per-user differences. Within "
        f"{section['level']:g} below the part counts as level."
    )
    header = ["figure", "best part", "fused", "part", "difference", "standard error"]
    doc.table([*header, "users", "verdict"], rows)


def _verdict(results: dict, k: int) -> str:
    """One sentence: is the fused model the best contender on both headline metrics?"""
    if plots.FUSED not in results:
        return "No fused model was evaluated."
    parts = []
    for part, label in (("overall", f"recall@{k}"), ("cold_items", f"cold-item recall@{k}")):
        values = {n: r[part].get(f"recall@{k}") for n, r in results.items()}
        fused = values.pop(plots.FUSED)
        peers = {n: v for n, v in values.items() if v is not None}
        if fused is None or not peers:
            parts.append(f"{label}: not measurable on this split")
            continue
        best = max(peers, key=peers.get)
        # the comparison table's rule: fused 0.0210 by TF-IDF's 0.0213 was "not the best"
        # here and "level" there
        word = {
            "ahead": "best",
            "level": f"level with the best (within {parts_rule.LEVEL:g})",
            "behind": "**not** the best",
        }[parts_rule.verdict(fused - peers[best])]
        parts.append(f"{label} {fused:.4f}, {word} (best peer: {best} {peers[best]:.4f})")
    return "The fused model: " + "; ".join(parts) + "."


def _sampled(users: int) -> str:
    """The sample's cost: on MovieLens, fused against EASE was +0.0105 (standard error
    0.0051) on all users and -0.0259 on a sample of 200, and nothing said why."""
    return (
        f"Restricted to a seeded sample of {users:,} users: **every contender was trained on "
        "these users' events only**, so the figures are below what the whole catalog gives "
        "and the comparisons between contenders may differ from a full run (`--all-users`)."
    )


def _data(doc: Document, metrics: dict) -> None:
    data = metrics["data"]
    doc.heading("Data and split")
    lines = [
        f"Catalog: {data['items']:,} items ({data['items_with_images']:,} with images, "
        f"{data['attributes']} attributes), {data['users']:,} users, "
        f"{data['interactions']:,} interactions.",
    ]
    if data.get("user_sample"):
        lines.append(_sampled(data["user_sample"]))
    split, task = metrics.get("split"), metrics.get("task")
    if split:
        cutoff = f", cutoff {split['cutoff']}" if split["cutoff"] else ""
        lines.append(
            f"Split: `{split['name']}`, holdout {split['holdout']}{cutoff}, seed {split['seed']}: "
            f"{split['train']:,} training and {split['test']:,} held-out interactions."
        )
        if split["name"] == "random" and split.get("validation_slice") == "temporal":
            lines.append(
                "The fused model's block weights are chosen as `recsys train` chooses them on "
                "dated events: on each user's latest training events by time. This split holds "
                "out a random share instead, so the weights suit another task than the one "
                "scored here, and the fused model trails the collaborative contenders by more "
                "than on a temporal split."
            )
        lines.append(
            f"Evaluated users: {task['evaluated_users']:,} (training history and held-out "
            f"items); held-out users without training history, not evaluated: "
            f"{task['test_users_without_training_history']:,}."
        )
        lines.append(
            f"Cold items (no training interaction): {task['cold_items']:,}; users holding "
            f"some out: {task['users_holding_cold_items']:,}."
        )
        pairs, repeats = task.get("heldout_pairs"), task.get("heldout_repeats")
        if repeats is not None:  # reports written before the count have none
            only = task["users_holding_only_repeats"]
            lines.append(
                f"Held-out (user, item) pairs scored: {pairs:,}. Left out: {repeats:,} pairs "
                f"of an item the user already had in training (training items are never "
                f"listed, so no contender could find them), and with them {only:,} users "
                "whose held-out items were all such repeats."
            )
        if (nothing := task.get("users_holding_nothing_out")) is not None:
            why = (
                "no events at or after the cut-off"
                if split["name"] == "time-cutoff"
                else "a share of fewer than 5 interactions is none"
            )
            lines.append(
                f"Training users the split held nothing out of, not evaluated: {nothing:,} ({why})."
            )
    else:
        lines.append("No interactions: only the item vectors are evaluated.")
    doc.bullets(lines)


def _at_each_k(doc: Document, inputs: ReportInputs, figures) -> None:
    results = inputs.metrics["contenders"]
    doc.heading("Metrics at each k (all items ranked)")
    for k in inputs.metrics["config"]["ks"]:
        doc.heading(f"k = {k}", 3)
        columns = {
            c: _column(results, {n: r["overall"].get(f"{c}@{k}") for n, r in results.items()})
            for c in COLUMNS
        }
        columns["popularity"] = {
            n: _fmt(r["overall"].get(f"popularity@{k}"), 1) for n, r in results.items()
        }
        rows = [[name, *(columns[c][name] for c in COLUMNS)] for name in results]
        doc.table(["contender", *COLUMNS], rows)
    doc.image(figures["recall"], "recall@k per contender")
    doc.image(figures["ndcg"], "nDCG@k per contender")


def _segments(doc: Document, inputs: ReportInputs, figures) -> None:
    results, k = inputs.metrics["contenders"], inputs.headline_k
    first = next(iter(results.values()))
    doc.heading(f"Segments (recall@{k})")
    groups = [(f"users {s}", "segments", s) for s in first["segments"]]
    groups += [("warm items only", "warm_items", None), ("cold items only", "cold_items", None)]
    columns = {}
    for label, part, key in groups:
        values = {
            n: (r[part][key] if key else r[part]).get(f"recall@{k}") for n, r in results.items()
        }
        columns[label] = _column(
            results, values, _cold_tied(results) if part == "cold_items" else frozenset()
        )
    header = ["contender"] + [
        f"{label} ({(first[part][key] if key else first[part])['users']} users)"
        for label, part, key in groups
    ]
    doc.table(header, [[n, *(columns[g[0]][n] for g in groups)] for n in results])
    doc.paragraph(
        "Users are segmented by their number of training interactions. Warm (cold) items only: "
        "only items with (without) training interactions are ranked, against the held-out "
        "items of that kind, for the users who hold such items out. n/a: the contender gives "
        "every cold item the same score (those without item content), so it has no cold-item "
        "figures."
    )
    doc.image(figures["segments"], "recall by segment")
    _cold_items(doc, results, inputs.metrics["config"]["ks"])


def _cold_items(doc: Document, results: dict, ks: list[int]) -> None:
    doc.heading("Cold-item ranking at each k", 3)
    tied = _cold_tied(results)
    rows = [
        [n, *(NOT_RANKED if n in tied else _fmt(r["cold_items"].get(f"recall@{k}")) for k in ks)]
        for n, r in results.items()
    ]
    doc.table(["contender", *(f"recall@{k}" for k in ks)], rows)


def _diversity(doc: Document, section: dict, figures) -> None:
    k, lambdas = section["k"], section["lambdas"]
    doc.heading(f"Diversity (MMR re-ranking of the fused model's top {section['pool']})")
    base = lambdas["0.0"]
    header = ["λ", f"recall@{k}", "vs λ=0", f"intra-list diversity@{k}", "vs λ=0"]
    header += [f"distinct {name}" for name in section["attributes"]]
    rows = []
    for lam, row in lambdas.items():
        recall, spread = row[f"recall@{k}"], row[f"diversity@{k}"]
        rows.append(
            [
                Bold(lam) if float(lam) == section["chosen"] else lam,
                _fmt(recall),
                _relative(recall, base[f"recall@{k}"]),
                _fmt(spread),
                _relative(spread, base[f"diversity@{k}"]),
                *(_fmt(row[f"distinct_{name}@{k}"], 2) for name in section["attributes"]),
            ]
        )
    doc.table(header, rows)
    chosen = section["chosen"]
    verdict = (
        f"The rule picks λ = {chosen}: the largest λ costing at most 2% relative recall@{k} "
        f"while raising intra-list diversity by 20% or more."
        if chosen
        else f"No λ costs at most 2% relative recall@{k} while raising intra-list diversity by "
        "20% or more: the rule picks λ = 0 (no re-ranking)."
    )
    doc.paragraph(
        f"{verdict} The service's default is λ = {section['served_default']} (chosen by this "
        "rule on MovieLens; requests set their own with diversity=). Intra-list diversity: the "
        "mean over lists of the mean pairwise content distance (1 - the mean of the tabular and "
        f"image cosines) among the top {k}; distinct values: per list, averaged over users."
    )
    doc.image(figures["diversity"], "recall against variety at each λ")


def _item_to_item(doc: Document, section: dict) -> None:
    k = section["k"]
    doc.heading(f"Item-to-item: next-item hit rate@{k}")
    rows = [
        [name, _fmt(row[f"hit_rate@{k}"]), _fmt(row["stderr"])]
        for name, row in section["rankers"].items()
    ]
    doc.table(["ranker", f"hit rate@{k}", "standard error"], rows)
    doc.paragraph(
        f"{section['pairs']:,} pairs: an evaluated shopper's last training item (the product "
        "page they were on) and their first held-out item other than it (where they went "
        f"next). A hit: the next item among the page item's {k} most similar, the item itself "
        "excluded. fused also / similar: the model's two product-page surfaces as served; ALS "
        "item-item: the cosine of the ALS contender's item factors."
    )


def _relative(value: float, base: float) -> str:
    if not base:
        return "–"
    return f"{100 * (value / base - 1):+.1f}%"


def _images(doc: Document, section: dict) -> None:
    doc.heading("Image encoder")
    doc.paragraph(
        f"Labelled items ({section['labels_file']}): {section['queries']:,} queries against a "
        f"gallery of {section['gallery']:,}; kNN accuracy (k=20, cosine, exp(cos/0.07) votes) "
        "and precision@10 of same-label retrieval. Labels are used only to score."
    )
    rows = [
        [name, _fmt(section[name]["knn_accuracy"]), _fmt(section[name]["precision@10"])]
        for name in ("image vectors", "raw pixels")
    ]
    doc.table(["vectors", "kNN accuracy", "precision@10"], rows)


def _vectors(doc: Document, inputs: ReportInputs, figures) -> None:
    doc.heading("Item vectors")
    doc.image(figures["map"], f"item map coloured by {inputs.map_attribute}")
    if not inputs.examples:
        return
    doc.heading("Similar items (fused model)", 3)
    titles = inputs.titles
    rows = [[titles[row[0]], "; ".join(titles[i] for i in row[1:])] for row in inputs.examples]
    doc.table(["query", "most similar items"], rows)
    doc.image(figures["similar"], "similar items")


def _configuration(doc: Document, inputs: ReportInputs) -> None:
    doc.heading("Configuration and reproduction")
    if inputs.command:
        doc.paragraph("Command:")
        doc.code(inputs.command)
    fused = inputs.metrics.get("fused")
    if fused:
        doc.paragraph(
            f"Fused block weights chosen on validation: `{json.dumps(_clean(fused['weights']))}`, "
            f"cold-item scale `{json.dumps(_clean(fused['cold_scale']))}`."
        )
    if inputs.seconds:
        times = ", ".join(
            f"{n} {s['fit']:.1f} s + {s['score']:.1f} s" for n, s in inputs.seconds.items()
        )
        doc.paragraph(f"Seconds (fit + score): {times}.")
    doc.paragraph("EvaluationConfig (also in metrics.json; same seed, same numbers):")
    doc.code(json.dumps(_clean(inputs.metrics["config"]), indent=1))


def _definitions(doc: Document) -> None:
    doc.heading("Definitions")
    doc.bullets(
        [
            "Training items are never recommended; H = a user's held-out items.",
            "recall@k = hits in top k / min(k, |H|); precision@k = hits / k; hit rate@k = any hit.",
            "nDCG@k: binary gains, log2 discount, normalised by min(k, |H|) hits at the top.",
            "Relevance is binary: every held-out item counts alike, whatever its events (a "
            "view as a purchase, a low rating as a high one); event weights shape training "
            "only.",
            "temporal split: each user's latest floor(20%) interactions are held out, events "
            "at one time in the order of their item ids (as text); training so holds events "
            "later than other users' held-out ones (--split time-cutoff holds out everything "
            "after one time instead).",
            "MAP@k: mean of precision at each hit rank, over min(k, |H|); "
            "MRR@k: 1 / first hit rank.",
            "coverage@k: share of catalog items in anyone's top k; popularity@k: mean number of "
            "training users of the recommended items (popularity bias).",
            "cold-item recall@k: only items without training interactions ranked, for users "
            "holding such items out.",
            f"{NOT_RANKED} (cold-item figures): the contender gives every new item the same "
            "score: its order among them is a tie-break, not a ranking.",
        ]
    )
