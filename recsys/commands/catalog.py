"""`recsys catalog`: catalog health from item vectors (duplicates, outliers, clusters, tags).

Vectors are the active bundle's item vectors (for duplicates and outliers, its items as
the "similar" surface compares them, ``FusedModel.listing_vectors``; duplicate pairs are
checked by their titles), or ``--vectors FILE.npy`` with its item ids (``--items``: a CSV
with an item_id column or one id per line; default: the FILE.ids.txt that `recsys
embed-images` writes beside it). Results go to stdout or ``--out`` as CSV or JSON.
"""

from __future__ import annotations

import csv
import json
import sys
import uuid
from pathlib import Path

import click
import numpy as np
import pandas as pd

from recsys.commands import Finite, OutPath, progress_option
from recsys.errors import InvalidInput
from recsys.files import out_path
from recsys.ingest.values import shown
from recsys.settings import Settings

_FORMATS = ("csv", "json")


def _source_options(command):
    """--vectors, --items, --out, --format and --progress, shared by every subcommand."""
    options = [
        click.option(
            "--vectors",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Item vectors, .npy (N, D) [default: the active bundle's; its listing vectors "
            "for duplicates and outliers, its item vectors for clusters and tags].",
        ),
        click.option(
            "--items",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Ids of --vectors' rows: CSV with item_id, or one id per line "
            "[default: the .ids.txt beside VECTORS, as embed-images writes: v.npy -> v.ids.txt].",
        ),
        click.option(
            "--out",
            type=OutPath(dir_okay=False, file_okay=True, allow_dash=True),
            help="Write here (.csv or .json; - or none: CSV on stdout).",
        ),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(_FORMATS),
            help="Output format [default: from --out's suffix, else csv].",
        ),
        progress_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def read_ids(path: Path) -> np.ndarray:
    """Item ids from a CSV with an item_id column, or a text file with one id per line."""
    if path.suffix.lower() == ".csv":
        ids = np.array(_csv_ids(path), dtype=str)
    else:
        ids = np.array([line.strip() for line in path.read_text().splitlines() if line.strip()])
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():  # its rows could not be told apart in the output
        twice = unique[counts > 1]
        raise InvalidInput(
            f"{path} names {len(twice)} item(s) more than once, e.g. {str(twice[0])!r}; "
            "one row of vectors per item"
        )
    return ids


def _csv_ids(path: Path) -> list[str]:
    """The item_id column as written: pandas read "NaN", "null" and "" as missing, and with
    one of them every id came back cut to its first character."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if "item_id" not in (reader.fieldnames or []):
            raise InvalidInput(f"{path} has no item_id column; add one, or pass ids one a line")
        ids = []
        for row in reader:
            if not (item := (row["item_id"] or "").strip()):
                raise InvalidInput(f"{path}: line {reader.line_num} has no item_id")
            ids.append(item)
    return ids


def read_labels(path: Path) -> pd.Series:
    """item id -> label from a CSV with item_id and label columns (any case): ``InvalidInput``
    naming the line for a row of another width or a label without an item id, and the item
    for one labelled twice differently. A row with an empty label is an item not labelled
    (a spreadsheet with the label column partly filled)."""
    with open(path, newline="", encoding="utf-8-sig") as f:  # a few labels: read whole
        reader = csv.reader(f)
        rows = [(reader.line_num, row) for row in reader if row]
    if not rows:
        raise InvalidInput(f"--labels {path} is empty; give a CSV with item_id,label")
    (_, header), *rows = rows
    names = [name.strip().lower() for name in header]
    if not {"item_id", "label"} <= set(names):
        raise InvalidInput(
            f"--labels {path} needs a comma-separated header row item_id,label; its first "
            f"line is {shown(','.join(header), 80)}"
        )
    for line, row in rows:
        if len(row) != len(header):
            raise InvalidInput(
                f"--labels {path}: line {line} has {len(row)} fields, the header "
                f"{len(header)}; quote a label that holds a comma"
            )
    table = pd.DataFrame([row for _, row in rows], columns=names, dtype=str)
    table = table.assign(item_id=table["item_id"].str.strip(), label=table["label"].str.strip())
    lines = np.array([line for line, _ in rows], dtype=np.int64)
    orphan = np.flatnonzero((table["item_id"] == "").to_numpy() & (table["label"] != "").to_numpy())
    if len(orphan):
        raise InvalidInput(f"--labels {path}: line {lines[orphan[0]]} has a label but no item_id")
    table = table[table["label"] != ""]
    labels = table.drop_duplicates(["item_id", "label"])
    twice = labels["item_id"].duplicated(keep=False).to_numpy()
    if twice.any():
        item = labels["item_id"].to_numpy()[twice][0]
        given = labels.loc[labels["item_id"] == item, "label"].tolist()
        raise InvalidInput(f"--labels {path}: item {item!r} is labelled {' and '.join(given)}")
    return labels.set_index("item_id")["label"]


def _smoothing_option(what: str):
    """``--smoothing``: rounds of ``recsys.catalog_intel.neighbours.smoothed`` (``what`` they
    are for)."""
    return click.option(
        "--smoothing",
        type=click.IntRange(min=0),
        default=2,
        show_default=True,
        help=f"{what} (0: the vectors as they are; skipped above 2,000,000 items).",
    )


def load_vectors(settings: Settings, vectors: Path | None, items: Path | None):
    """(item ids (N,), vectors (N, D)) from --vectors/--items or the active bundle."""
    if vectors is None:
        from recsys.catalog.db import connect_current

        folder, ids, kept = _active_bundle(connect_current(settings.database_url))
        vectors = np.load(folder / "item_vectors.npy", allow_pickle=False)
        return ids[kept], vectors if kept.all() else vectors[kept]
    try:
        matrix = np.load(vectors, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # not .npy, Python objects, empty file
        raise InvalidInput(
            f"--vectors {vectors} is not a .npy array of numbers ({exc}); "
            "write one with "
            "numpy.save or `recsys embed-images`"
        ) from None
    items = items or vectors.with_suffix(".ids.txt")
    if not items.is_file():
        raise InvalidInput(f"--vectors {vectors} needs --items (no {items.name} beside it)")
    ids = read_ids(items)
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number) or matrix.dtype.kind == "c":
        raise InvalidInput(
            f"--vectors has shape {matrix.shape} and type {matrix.dtype}: give an (items, "
            "dimensions) array of numbers"
        )
    if len(ids) != len(matrix):
        raise InvalidInput(
            f"--vectors has shape {matrix.shape} but --items names {len(ids)} items; "
            "give the ids file written with these vectors"
        )
    return ids, matrix


def _bundle_duplicates(settings: Settings, threshold: float, opts: dict) -> None:
    """``duplicates`` on the active bundle's listings, decided as the service decides them:
    by the catalog's photos where it has them, else by the titles' words (``--no-verify``:
    the cosine alone)."""
    from recsys.catalog.db import connect_current
    from recsys.catalog_intel.photos import checked_pairs

    engine = connect_current(settings.database_url)
    ids, vectors, titles = _listing_vectors(engine)
    group_by, groups = _groups(settings, opts["group_by"], ids)
    checked = checked_pairs(
        engine,
        ids,
        vectors,
        threshold,
        opts["verify"],
        show_progress=opts["progress"],
        groups=groups,
    )
    at = checked.threshold if checked.verified_threshold is None else checked.verified_threshold
    extra = {"threshold": checked.threshold, "score": checked.scored_by}
    if group_by:
        extra |= {"group_by": group_by, "grouped_pairs": checked.grouped}
    if checked.verified_threshold is not None:
        extra |= {
            "verified_threshold": at,
            "verified": checked.verified,
            "skipped": checked.skipped,
        }
    if checked.closest is not None:
        extra["closest_left_out"] = checked.closest
    _emit_pairs(ids, checked.left, checked.right, checked.score, at, extra, opts, titles)


def _emit_pairs(ids, left, right, score, at: float, extra: dict, opts: dict, titles=None):
    """One row per pair, most similar first: its set, its items (and their titles, a callable
    of rows), its score; the sets, largest first, added to ``extra``; a summary on stderr."""
    from recsys.catalog_intel.duplicates import duplicate_sets, set_rows

    order = np.argsort(-np.asarray(score), kind="stable")
    left, right = np.asarray(left)[order], np.asarray(right)[order]
    set_of = duplicate_sets(len(ids), left, right)
    table = pd.DataFrame(
        {
            "set": set_of[left],
            "item_a": ids[left],
            "item_b": ids[right],
            "similarity": np.round(np.asarray(score)[order], 6),
        }
    )
    if titles is not None:  # the bundle's items: what a person checks a pair by
        table["title_a"], table["title_b"] = titles(left), titles(right)
    rows, sizes = set_rows(set_of)
    parts = np.split(rows, np.cumsum(sizes)[:-1]) if len(sizes) else []
    extra = {**extra, "sets": [ids[part].tolist() for part in parts]}
    click.echo(
        f"{len(table)} pairs in {len(parts)} sets at {extra['score']} score >= {at:.4f}"
        + ("" if len(table) else _none_passed(extra)),
        err=True,
    )
    if "group_by" in extra:
        click.echo(
            f"{extra['grouped_pairs']} pairs of variants of one product (the same "
            f"{extra['group_by']}) left out",
            err=True,
        )
    emit(table, extra, opts["out"], opts["fmt"])


def _none_passed(extra: dict) -> str:
    """What the summary adds when no pair reaches the threshold: how close the closest
    candidate came, where titles or photos scored it, and what would list it (a bookshop's
    one work in other formats scored up to 0.899 and "0 pairs" was all it said)."""
    closest = extra.get("closest_left_out")
    said = "" if closest is None else f"; the closest pair scores {closest:.4f}"
    if "verified_threshold" in extra:  # calibrated on the catalog's photos, not --threshold
        return said
    return f"{said}; lower --threshold to list near-duplicates"


def _groups(settings: Settings, asked: str | None, ids) -> tuple[str, np.ndarray | None]:
    """(the attribute naming each item's product, "" for none; (len(ids),) each item's value
    number of it in the active bundle, -1 for none or an item the bundle lacks): --group-by,
    else RECSYS_GROUP_BY; a usage error naming the attributes the bundle can group by."""
    from recsys.catalog.db import connect_current
    from recsys.model.recommender import ItemFilters

    name = settings.group_by if asked is None else asked
    if not name:
        return "", None
    folder, bundle_ids = _bundle_items(connect_current(settings.database_url))
    try:
        codes = ItemFilters.load(folder).group_codes(name)
    except InvalidInput as exc:
        hint = "--group-by" if asked is not None else "RECSYS_GROUP_BY"
        raise click.BadParameter(str(exc), param_hint=hint) from None
    rows = pd.Index(bundle_ids).get_indexer(np.asarray(ids, dtype=str))  # (N,) -1: not in it
    return name, np.where(rows >= 0, codes[np.maximum(rows, 0)], -1)


def _listing_vectors(engine, space: str = "listing_vectors"):
    """(item ids, vectors, titles) of the active bundle's items as listings: the way
    duplicates compare them (``FusedModel.listing_vectors``) or outliers (``space``
    "content_vectors"), and rows -> their titles in the catalog."""
    from recsys.catalog.reads import titles_by_row
    from recsys.model.fusion import FusedModel

    folder, ids, kept = _active_bundle(engine)
    vectors = getattr(FusedModel.load(folder), space)()
    if not kept.all():
        ids, vectors = ids[kept], vectors[kept]
    return ids, vectors, titles_by_row(engine, ids)


def _bundle_attributes(settings: Settings, ids: np.ndarray) -> dict:
    """Filterable attribute -> ((len(ids), values) 0/1 matrix, values) from the active
    bundle, rows in ``ids``' order: what names a cluster (``describe_clusters``)."""
    from recsys.catalog.db import connect_current
    from recsys.model.recommender import ItemFilters

    folder, bundle_ids = _bundle_items(connect_current(settings.database_url))
    rows = pd.Index(bundle_ids).get_indexer(np.asarray(ids, dtype=str))
    filters = ItemFilters.load(folder)
    return {
        name: (filters.labels(name)[rows], filters.postings[name].values)
        for name in filters.postings
    }


def _bundle_items(engine) -> tuple[Path, np.ndarray]:
    """(folder, item ids) of the catalog's active bundle."""
    from recsys.model.bundle import active_bundle

    folder = Path(active_bundle(engine).path)
    return folder, np.load(folder / "item_ids.npy", allow_pickle=False).astype(str)


def _active_bundle(engine) -> tuple[Path, np.ndarray, np.ndarray]:
    """(folder, item ids, which of them the catalog still has) of the catalog's active
    bundle: the items removed since it was trained are no listings to check, and are named."""
    from recsys.catalog.reads import items_present

    folder, ids = _bundle_items(engine)
    kept = items_present(engine, ids)
    if not kept.all():
        click.echo(
            f"{int((~kept).sum())} of the bundle's {len(ids)} items were removed from the "
            "catalog since it was trained: left out",
            err=True,
        )
    return folder, ids, kept


def emit(table: pd.DataFrame, extra: dict, out: Path | None, fmt: str | None) -> None:
    """The rows as CSV, or rows and ``extra`` as one JSON document; atomically to ``out``."""
    fmt = fmt or ("json" if out is not None and out.suffix.lower() == ".json" else "csv")
    if fmt == "json":  # a missing value is null: NaN (an item without a title) is no JSON
        rows = table.astype(object).where(table.notna(), None).to_dict(orient="records")
        text = json.dumps({**extra, "rows": rows}, indent=1, allow_nan=False) + "\n"
    else:
        text = table.to_csv(index=False)
    try:
        _write(text, out)
    except OSError as exc:  # a traceback: /proc/x.json, a full disk under stdout
        failed = click.ClickException(f"cannot write {out or 'stdout'}: {exc.strerror}")
        failed.exit_code = 2  # as every file the machine refuses (1: rows were rejected)
        raise failed from None
    if out is not None and str(out) != "-":
        click.echo(f"wrote {len(table)} rows to {out}", err=True)


def _write(text: str, out: Path | None) -> None:
    """To stdout (None or "-"), into a device or pipe as it is, else atomically, through a
    link to its target: a temporary file renamed over the path had replaced /dev/full with a
    file, and a link with a copy, its target unchanged."""
    if out is None or str(out) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    out = out_path(out)  # ~ expanded, through links
    if out.exists() and not out.is_file():
        with open(out, "w") as stream:
            stream.write(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".catalog-{uuid.uuid4().hex[:8]}.tmp")  # short: any name fits
    try:
        tmp.write_text(text)
        tmp.replace(out)
    except BaseException:  # a full disk left the part it had written
        tmp.unlink(missing_ok=True)
        raise


@click.group("catalog")
def command() -> None:
    """Catalog health from the item vectors: duplicate listings, outliers, clusters, tags.

    \b
    Examples:
      recsys catalog duplicates --images items.csv --out dups.csv
      recsys catalog outliers --fpr 0.01 --top 50
      recsys catalog clusters --k 12 --out clusters.json
      recsys catalog tag --labels few_labels.csv --method propagation --out tags.csv
    """


@command.command("duplicates")
@_source_options
@click.option(
    "--threshold",
    type=Finite(-1, 1),
    help="Cosine from which a pair is a duplicate [default: on the bundle, 0.95 (as the "
    "service); with --images, calibrated from edited copies of the items' images; with "
    "--vectors, none: pass one].",
)
@click.option(
    "--images",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV item_id,image: describe these images for copy detection (instead of --vectors) "
    "and calibrate the threshold on edited copies of them.",
)
@click.option("--images-root", type=click.Path(exists=True, file_okay=False), help="Of --images.")
@click.option(
    "--encoder",
    type=click.Path(exists=True, file_okay=False),
    help="With --images: an image encoder (train-images) instead of the copy descriptor.",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="With --images: decide each item's nearest candidates by geometric verification "
    "(align the photos, then correlate pixels); the score is then the verified one. On the "
    "bundle's listing vectors: a pair of items with titles scores at most the share of the "
    "shorter title's words that the other title has.",
)
@click.option(
    "--recall",
    type=Finite(0, 1, min_open=True, max_open=True),
    default=0.9,
    show_default=True,
    help="Calibration: share of edited self-copies the threshold must catch.",
)
@click.option(
    "--group-by",
    metavar="ATTRIBUTE",
    help="An attribute of the active bundle naming the product each item is a variant of "
    "(e.g. a style all of a product's sizes and colours share): two items with the same "
    "value are no duplicates, whatever their photos. Default: RECSYS_GROUP_BY; '' for none.",
)
@click.pass_obj
def duplicates(settings: Settings, **opts) -> None:
    """Pairs of items above a similarity threshold, grouped into duplicate sets.

    One row per pair: set, item_a, item_b, similarity (most similar first); on the bundle, also
    title_a and title_b from the catalog. The active bundle's items are compared by their
    listing vectors (attributes and photos at the weights of the similar-items surface), so a
    re-listed item meets its source whether or not shoppers found either; the pairs are then
    decided as /v1/admin/catalog/duplicates decides them: by the catalog's photos (geometric
    verification, threshold calibrated on edited copies) where it has them, else two items
    with titles score at most the share of the shorter title's words the other has
    (--no-verify: the vectors' cosine alone). With --images the items' photos are described
    by the copy-detection descriptor (or --encoder), each item's nearest candidates are
    checked by geometric verification (--no-verify: cosine only), and the threshold is
    calibrated without labels, from each item's score against an edited copy of its own
    photo (crop, JPEG, brightness, shift) and against its nearest other item. With
    --group-by (or RECSYS_GROUP_BY), pairs of one product's variants are left out before the
    sets are formed, and the summary says how many.
    """
    from recsys.catalog_intel import DuplicateConfig, DuplicateFinder
    from recsys.catalog_intel.duplicates import LISTING_THRESHOLD, self_copy_similarities
    from recsys.catalog_intel.verification import self_copy_scores

    threshold = opts["threshold"]
    if threshold is None and opts["images"] is None:
        if opts["vectors"] is not None:
            raise click.UsageError(
                "no threshold to call a pair a duplicate: pass --threshold (a cosine, e.g. "
                "0.95), or --images ITEMS.csv (item_id,image) to calibrate one on edited "
                "copies of the items' photos"
            )
        threshold = LISTING_THRESHOLD  # the bundle's listing vectors, as the service
    cfg = DuplicateConfig(threshold=threshold, recall=opts["recall"])
    copy_sims, verify_images = None, None
    if opts["images"] is not None:
        ids, images = _images(opts)
        embed = _embedder(opts, images)
        vectors = embed(images)
        verify_images = images if opts["verify"] else None
        if cfg.threshold is None and opts["verify"]:
            copy_sims = self_copy_scores(images)
        elif cfg.threshold is None:
            copy_sims = self_copy_similarities(embed, images)
    elif opts["vectors"] is None:
        _bundle_duplicates(settings, threshold, opts)
        return
    else:
        ids, vectors = load_vectors(settings, opts["vectors"], opts["items"])
    group_by, groups = _groups(settings, opts["group_by"], ids)
    finder = DuplicateFinder(cfg, show_progress=opts["progress"])
    finder.fit(vectors, copy_sims, images=verify_images, groups=groups)
    pairs = finder.pairs_
    extra = {"threshold": finder.threshold_, "score": finder.scored_by_}
    if group_by:
        extra |= {"group_by": group_by, "grouped_pairs": finder.grouped_out_}
    if finder.calibration_ is not None:
        extra["calibration"] = vars(finder.calibration_)
    _emit_pairs(ids, pairs.left, pairs.right, pairs.similarity, finder.threshold_, extra, opts)


def _images(opts: dict) -> tuple[np.ndarray, np.ndarray]:
    """(ids, uint8 (N, S, S) grayscale at the copy descriptor's side) of the --images CSV."""
    from recsys.catalog_intel.copy_descriptor import CopyDescriptorConfig
    from recsys.vision.cache import decoded_images
    from recsys.vision.data import read_items_csv

    ids, paths = read_items_csv(opts["images"], opts["images_root"] or opts["images"].parent)
    if len(ids) < 2:
        raise InvalidInput(f"--images {opts['images']} lists {len(ids)} photo; pairs need 2")
    side = CopyDescriptorConfig().side
    data = decoded_images(paths, side, 1, show_progress=opts["progress"])  # (N, 1, S, S)
    return np.asarray(ids, dtype=str), data[:, 0].numpy()


def _embedder(opts: dict, images: np.ndarray):
    """images -> vectors: the --encoder's, else the copy descriptor centred on ``images``."""
    if opts["encoder"]:
        from recsys.vision import ImageEncoder

        encoder = ImageEncoder.load(opts["encoder"])
        return lambda batch: encoder.transform(batch)
    from recsys.catalog_intel.copy_descriptor import center, copy_descriptors

    mean = copy_descriptors(images, show_progress=opts["progress"]).mean(axis=0)
    return lambda batch: center(copy_descriptors(batch), mean)


@command.command("outliers")
@_source_options
@click.option(
    "--fpr",
    type=Finite(0, 1, min_open=True, max_open=True),
    default=0.01,
    show_default=True,
    help="Share of the catalog flagged; at most about this share of ordinary items is flagged.",
)
@click.option(
    "--k",
    type=click.IntRange(min=1),
    help="Neighbour rank of the score [default: 2% of the items, from 10 to 100].",
)
@click.option("--top", type=click.IntRange(min=1), help="Only the N most unusual items.")
@click.pass_obj
def outliers(settings: Settings, **opts) -> None:
    """Each item's outlier score (1 - cosine to its k-th nearest item), most unusual first.

    Columns: item_id, score, flagged (score above the (1 - fpr) quantile of all scores); on the
    bundle, also title from the catalog. The active bundle's items are compared as listings
    (their attributes and photos, as duplicates compares them), so an item is not unusual for
    how often shoppers view it.
    """
    from recsys.catalog_intel import OutlierConfig, OutlierScorer

    titles = None
    if opts["vectors"] is None:
        from recsys.catalog.db import connect_current

        engine = connect_current(settings.database_url)
        ids, vectors, titles = _listing_vectors(engine, "content_vectors")
    else:
        ids, vectors = load_vectors(settings, opts["vectors"], opts["items"])
    cfg = OutlierConfig(k=opts["k"], false_positive_rate=opts["fpr"])
    scorer = OutlierScorer(cfg, show_progress=opts["progress"]).fit(vectors)
    if opts["k"] is not None and scorer.k_ < opts["k"]:  # it was clamped without a word
        click.echo(
            f"--k {opts['k']} is more than the {len(ids) - 1} other items: scored at k = "
            f"{scorer.k_}",
            err=True,
        )
    order = scorer.top(opts["top"] or len(ids))
    table = pd.DataFrame(
        {
            "item_id": ids[order],
            "score": np.round(scorer.scores_[order], 6),
            "flagged": scorer.flagged_[order],
        }
    )
    if titles is not None:
        table["title"] = titles(order)
    extra = {"k": scorer.k_, "threshold": scorer.threshold_, "fpr": opts["fpr"]}
    emit(table, extra, opts["out"], opts["fmt"])


@command.command("clusters")
@_source_options
@click.option(
    "--k",
    type=click.IntRange(min=2),
    help="Number of clusters [default: the best silhouette among 2..32].",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the k-means restarts (and of the sample that chooses k).",
)
@_smoothing_option("Rounds of averaging each vector over its 10 nearest items before k-means")
@click.pass_obj
def clusters(settings: Settings, **opts) -> None:
    """K-means clusters of the catalog; each cluster's medoid (its most typical item).

    Columns: item_id, cluster, medoid (true for the item that represents its cluster).
    """
    from recsys.catalog_intel import ClusterConfig, Clusterer
    from recsys.catalog_intel.clusters import describe_clusters

    ids, vectors = load_vectors(settings, opts["vectors"], opts["items"])
    cfg = ClusterConfig(k=opts["k"], seed=opts["seed"], smoothing=opts["smoothing"])
    fitted = Clusterer(cfg, show_progress=opts["progress"]).fit(vectors)
    is_medoid = np.zeros(len(ids), bool)
    is_medoid[fitted.medoids_[fitted.medoids_ >= 0]] = True
    table = pd.DataFrame({"item_id": ids, "cluster": fitted.labels_, "medoid": is_medoid})
    attributes = _bundle_attributes(settings, ids) if opts["vectors"] is None else {}
    named = describe_clusters(fitted.labels_, fitted.k_, attributes)
    extra = {
        "k": fitted.k_,
        "smoothing": fitted.smoothing_,
        "silhouette_by_k": {str(k): v for k, v in fitted.k_scores_.items()},
        "clusters": [
            {
                "cluster": c,
                "size": int(fitted.sizes_[c]),
                "medoid": str(ids[m]),
                **dict(zip(("attribute", "value", "share"), named[c] or (None,) * 3, strict=True)),
            }
            for c, m in enumerate(fitted.medoids_)
            if m >= 0
        ],
    }
    names = [f"{n[1]} ({n[2]:.0%})" if n else "-" for n in named]
    click.echo(f"k = {fitted.k_}; sizes {fitted.sizes_.tolist()}; named {names}", err=True)
    emit(table, extra, opts["out"], opts["fmt"])


@command.command("tag")
@_source_options
@click.option(
    "--labels",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV item_id,label for a few items (a handful per label is enough to start).",
)
@click.option(
    "--method",
    type=click.Choice(["linear", "propagation"]),
    default="linear",
    show_default=True,
    help="linear: logistic regression on the labelled items' vectors, each averaged over "
    "its nearest items first, the penalty C chosen by cross-validation on them; "
    "propagation: label spreading over the nearest-neighbour graph of all items.",
)
@_smoothing_option("linear: rounds of averaging each vector over its 10 nearest items first")
@click.pass_obj
def tag(settings: Settings, **opts) -> None:
    """Predict a label for every item from a few labelled ones, with a confidence each.

    Columns: item_id, label, confidence (probability of that label), given (labelled input).
    """
    from recsys.catalog_intel import TagConfig, Tagger

    ids, vectors = load_vectors(settings, opts["vectors"], opts["items"])
    known = read_labels(opts["labels"])
    per_item = known.reindex(ids).to_numpy(dtype=object)
    unknown = known.index[~known.index.isin(ids)]
    if len(unknown):
        named = ", ".join(shown(item) for item in unknown[:5]) + (
            ", ..." if len(unknown) > 5 else ""
        )
        click.echo(
            f"{len(unknown)} labelled item ids are not among the vectors' items ({named})",
            err=True,
        )
    config = TagConfig(method=opts["method"], smoothing=opts["smoothing"])
    tagger = Tagger(config, show_progress=opts["progress"])
    tagger.fit(vectors, per_item)
    table = pd.DataFrame(
        {
            "item_id": ids,
            "label": tagger.predictions_,
            "confidence": np.round(tagger.confidence_, 4),
            "given": tagger.labelled_,
        }
    )
    extra = {"method": opts["method"], "labels": tagger.classes_.tolist()}
    if opts["method"] == "linear":  # what cross-validation chose on the labelled items
        accuracy = tagger.cv_accuracy_
        extra.update(c=tagger.c_, smoothing=tagger.smoothing_, cv_balanced_accuracy=accuracy)
        how = (
            "no label has 2 labelled items to hold one out: not cross-validated"
            if accuracy is None
            else f"cross-validated; held-out balanced accuracy {accuracy:.3f}"
        )
        click.echo(
            f"logistic regression C = {tagger.c_:g} ({how}), smoothing rounds {tagger.smoothing_}",
            err=True,
        )
    emit(table, extra, opts["out"], opts["fmt"])
