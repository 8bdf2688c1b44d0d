"""`recsys export`: the catalog's events as Parquet, for Spark and data lakes (`interactions`),
and the service's answers for every user or item (`feeds`, `similar`)."""

from __future__ import annotations

from pathlib import Path

import click

from recsys.catalog.db import connect_current
from recsys.commands import OutPath, bars
from recsys.commands.train import (
    _diversity_option,
    _filter_option,
    _group_option,
    _k_option,
    _mode_option,
    _new_items_option,
    checked_answer_options,
    checked_new_items,
)
from recsys.files import out_path, writing
from recsys.settings import Settings


@click.group("export")
def command() -> None:
    """Write catalog data and served answers as files other engines read (Spark, pyarrow,
    DuckDB)."""


@command.command("interactions")
@click.option(
    "--out",
    type=OutPath(),
    required=True,
    help="Folder to write: OUT/day=YYYY-MM-DD/part-N.parquet plus OUT/_recsys_export.json.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUT when it is not empty.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
def interactions(settings: Settings, out: Path, overwrite: bool, quiet: bool) -> None:
    """Every interaction (user_id, item_id, event, weight, timestamp) as Parquet partitioned
    by day. `recsys train --events OUT` trains on it with the same confidence weighting as on
    the catalog; copy OUT to object storage (s3://, gs://, hdfs://) for a cluster."""
    from recsys.engines.events import export_interactions

    out = out_path(out)
    with writing(out):
        engine = connect_current(settings.database_url)
        summary = export_interactions(engine, out, overwrite, show_progress=bars(quiet))
    click.echo(f"{summary['rows']} interactions over {summary['days']} days written to {out}")


def _ids_file(option: str):
    """--users / --items FILE: one id a line ('-': stdin), read as the export goes."""
    return click.option(
        option,
        "ids_file",
        type=click.File("r", encoding="utf-8"),
        help="One id a line ('-': standard input) instead of every one of the catalog.",
    )


def _lines(ids_file, option: str):
    """The ids of ``ids_file``, each held to the id rule (``parse_id``); blank lines skipped.
    ``InvalidInput`` naming the line for one that breaks it."""
    from recsys.errors import InvalidInput
    from recsys.ingest.values import BadValue, parse_id

    for number, line in enumerate(ids_file, 1):
        if not line.strip():
            continue
        try:
            yield parse_id(line.rstrip("\r\n"), "the id")
        except BadValue as exc:
            raise InvalidInput(f"{option} line {number}: {exc}") from None


_out_option = click.option(
    "--out",
    type=OutPath(),
    required=True,
    help="Folder to write: OUT/part-N.parquet plus OUT/_manifest.json.",
)


@command.command("feeds")
@_out_option
@_ids_file("--users")
@_k_option
@_diversity_option
@_new_items_option
@_group_option
@_filter_option
@click.option("--overwrite", is_flag=True, help="Replace OUT when it is an earlier export.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
def feeds(
    settings: Settings,
    out,
    ids_file,
    k,
    diversity,
    new_items,
    group_by,
    filters,
    overwrite,
    quiet,
):
    """Every user's home feed (user_id, rank, item_id, score, fallback) as Parquet, as the
    service answers it: the active bundle, the catalog's item changes and each user's events
    since. A user the catalog does not have gets the popularity fallback."""
    from recsys.engines.answers import export_feeds
    from recsys.serving import FeedRequest, load_state

    checked_new_items(new_items, k)
    out = out_path(out)
    with writing(out):
        engine = connect_current(settings.database_url)
        state = load_state(engine, warm=False)
        group = checked_answer_options(state.recommender, settings, group_by, filters)
        request = FeedRequest(
            k=k, filters=filters, diversity=diversity, new_items=new_items, group_by=group
        )
        users = None if ids_file is None else _lines(ids_file, "--users")
        summary = export_feeds(state, engine, out, users, request, overwrite, bars(quiet))
    click.echo(f"{summary['rows']} rows of {summary['users']} users' feeds written to {out}")


@command.command("similar")
@_out_option
@_ids_file("--items")
@click.option(
    "-k",
    "--k",
    type=click.IntRange(1, 1000),
    default=12,
    show_default=True,
    help="How many similar items per item.",
)
@_mode_option
@_diversity_option
@_group_option
@_filter_option
@click.option("--overwrite", is_flag=True, help="Replace OUT when it is an earlier export.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
def similar(
    settings: Settings, out, ids_file, k, mode, diversity, group_by, filters, overwrite, quiet
):
    """Every item's similar items (item_id, rank, similar_item_id, score) as Parquet, as the
    service answers them: the active bundle and the catalog's item changes since. An item
    removed or unknown to the model is skipped and counted in the manifest."""
    from recsys.engines.answers import SimilarRequest, export_similar
    from recsys.serving import served_recommender

    out = out_path(out)
    with writing(out):
        engine = connect_current(settings.database_url)
        recommender = served_recommender(engine)
        group = checked_answer_options(recommender, settings, group_by, filters)
        request = SimilarRequest(
            k=k, mode=mode, diversity=diversity, group_by=group, filters=filters
        )
        items = None if ids_file is None else _lines(ids_file, "--items")
        summary = export_similar(recommender, engine, out, items, request, overwrite, bars(quiet))
    skipped = f" ({summary['skipped']} skipped: removed or unknown)" if summary["skipped"] else ""
    click.echo(f"{summary['rows']} rows of {summary['items']} items written to {out}{skipped}")
