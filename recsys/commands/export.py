"""`recsys export interactions`: the catalog's events as Parquet, for Spark and data lakes."""

from __future__ import annotations

from pathlib import Path

import click

from recsys.catalog.db import connect_current
from recsys.commands import OutPath, bars
from recsys.files import out_path, writing
from recsys.settings import Settings


@click.group("export")
def command() -> None:
    """Write catalog data as files other engines read (Spark, pyarrow, DuckDB)."""


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
