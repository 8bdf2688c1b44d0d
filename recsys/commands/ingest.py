"""`recsys ingest`: load items and interactions into the catalog."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import click

from recsys.catalog import connect
from recsys.commands import bars
from recsys.errors import InvalidInput
from recsys.ingest import IngestOptions, IngestReport, ingest_interactions, ingest_items
from recsys.settings import Settings

FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group("ingest")
def command() -> None:
    """Load items or interactions from CSV, Parquet or JSON Lines (.gz ok for CSV/JSONL).

    Rows are written in batches, one transaction each; re-ingesting a file changes nothing
    except rows that changed. Bad rows are listed with their line numbers and written to
    FILE.rejects.csv; the exit status is 1 when any row was rejected, 2 when the file cannot
    be used at all (nothing is written then).
    """


def _options(function):
    function = click.option(
        "--batch-size",
        default=IngestOptions.batch_size,
        show_default=True,
        help="Rows per transaction.",
    )(function)
    function = click.option(
        "--rejects",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Where to write rejected rows [default: FILE.rejects.csv].",
    )(function)
    function = click.option(
        "--ignore-column",
        "ignore_columns",
        multiple=True,
        metavar="NAME",
        help="A column of FILE to leave out (repeat for several): an interactions file's "
        "other columns are refused, an items file's would be attributes.",
    )(function)
    function = click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")(
        function
    )
    return click.option("--quiet", "-q", is_flag=True, help="No progress bar.")(function)


@command.command("items")
@click.argument("file", type=FILE)
@click.option(
    "--images-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder that `image` paths are relative to [default: FILE's folder].",
)
@click.option(
    "--widen-kinds",
    is_flag=True,
    help="Let FILE change the kind the catalog records for an attribute (numeric or date to "
    "categorical, one value to a list, categorical to text), for every item. Without it, a "
    "row whose value does not fit its attribute's kind is rejected, as the HTTP API refuses it.",
)
@_options
@click.pass_obj
def items(
    settings: Settings,
    file: Path,
    images_root,
    widen_kinds,
    batch_size,
    rejects,
    ignore_columns,
    as_json,
    quiet,
):
    """Add items from FILE, or replace the ones the catalog has.

    Columns: item_id (required); image, title, in_stock (optional); every other column is a
    tabular attribute whose kind (numeric, categorical, multi-valued a|b|c, text, date) is
    inferred and recorded. A row replaces its item's whole row: a column the file lacks
    (a title, a photo, an attribute) is cleared, so give every column, not only the ones that
    changed (the HTTP API's PATCH changes some fields of one item).
    """
    options = IngestOptions(
        batch_size=batch_size,
        rejects_path=rejects,
        show_progress=bars(quiet),
        ignore_columns=ignore_columns,
        widen_kinds=widen_kinds,
    )
    with _unusable_as_json(file, as_json):
        report = ingest_items(connect(settings.database_url), file, images_root, options)
    _finish(report, as_json, _images_root_hint(report, images_root or file.parent))


def _images_root_hint(report: IngestReport, root: Path) -> str | None:
    """When most rows' images were not found: where they were looked for, and the option
    that says where they are."""
    missing = report.rejected.get("missing_image", 0)
    if not missing or missing < report.accepted:
        return None
    return (
        f"hint: {missing} rows' images were not found under {root.resolve()}; if the `image` "
        "paths are relative to another folder, pass --images-root DIR"
    )


@command.command("interactions")
@click.argument("file", type=FILE)
@_options
@click.pass_obj
def interactions(
    settings: Settings, file: Path, batch_size, rejects, ignore_columns, as_json, quiet
):
    """Add interactions from FILE.

    Columns: user_id, item_id (required); timestamp (ISO 8601 or epoch seconds), event (view,
    click, cart, purchase, ...; default "interaction", or "rating" when a rating is given),
    weight or rating (default 1) are optional; any other column is refused, naming it (leave
    it out with --ignore-column). Items must be ingested first.
    """
    options = IngestOptions(
        batch_size=batch_size,
        rejects_path=rejects,
        show_progress=bars(quiet),
        ignore_columns=ignore_columns,
    )
    with _unusable_as_json(file, as_json):
        report = ingest_interactions(connect(settings.database_url), file, options)
    _finish(report, as_json)


@contextmanager
def _unusable_as_json(file: Path, as_json: bool):
    """With --json, an ingest that stops still gets its JSON summary on stdout: what was
    stored by then (nothing, for a file that cannot be used at all), the reason under
    "error"; the error line and exit status follow as without it."""
    try:
        yield
    except Exception as exc:
        # what a stopped ingest had stored by then (its report), or nothing: the shape of
        # the summary with "error" added (it said "accepted": 0 with 5,142 rows stored)
        report = getattr(exc, "report", None)
        if as_json and (report is not None or isinstance(exc, InvalidInput)):
            summary = report.as_dict() if report is not None else {"path": str(file), "accepted": 0}
            click.echo(json.dumps({**summary, "error": str(exc)}, indent=2))
        raise


def _finish(report: IngestReport, as_json: bool, hint: str | None = None) -> None:
    for reject in report.first_rejects:
        click.echo(f"{report.path.name}: {reject}", err=True)
    hidden = report.total_rejected - len(report.first_rejects)
    if hidden > 0:
        click.echo(f"... and {hidden} more rejected rows", err=True)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(
            f"{report.path.name}: {report.accepted} accepted ({report.inserted} new, "
            f"{report.updated} updated, {report.unchanged} unchanged), "
            f"{report.total_rejected} rejected"
        )
        for reason, count in sorted(report.rejected.items()):
            click.echo(f"  {reason}: {count}")
        if report.rejects_path:
            click.echo(f"rejected rows written to {report.rejects_path}")
    if not report.accepted and not report.total_rejected:
        click.echo(f"warning: {report.path.name} holds no rows, only its header", err=True)
    if report.cleared:
        named = _first_of(report.cleared, report.first_cleared)
        click.echo(
            f"warning: {report.cleared} updated items lost their title, photo or attributes "
            f"({named}): a row replaces its item's whole row; give every column, not "
            "only the changed ones (PATCH /v1/items/<id> changes some fields of one item); "
            "ingesting their full rows again restores them",
            err=True,
        )
    if report.revived:
        named = _first_of(report.revived, report.first_revived)
        click.echo(
            f"warning: {report.revived} new items had been removed from the catalog before "
            f"({named}; the item change log remembers removals until `recsys db "
            "prune-changes`): this file listed them again. If it is older than the removals, "
            "remove them again (DELETE /v1/items/<id>)",
            err=True,
        )
    if hint:
        click.echo(hint, err=True)
    if report.total_rejected:
        raise SystemExit(1)


def _first_of(count: int, first: list[str]) -> str:
    """The first ids of ``count`` a warning names, "..." after them when there are more."""
    return ", ".join(first) + (" ..." if count > len(first) else "")
