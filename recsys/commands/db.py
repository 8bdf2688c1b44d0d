"""`recsys db`: apply and inspect the catalog's Alembic migrations; prune the change log."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

import click
from tqdm import tqdm

from recsys.catalog import changes, connect, migrate
from recsys.catalog.changes import Retention
from recsys.catalog.db import connect_current, sqlite_path
from recsys.commands import Finite
from recsys.settings import Settings


@click.group("db")
def command() -> None:
    """Create or migrate the catalog database; back it up, restore or copy it."""
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)  # show each step


@command.command()
@click.argument("revision", default="head")
@click.pass_obj
def upgrade(settings: Settings, revision: str) -> None:
    """Apply migrations up to REVISION (default: head, the latest); a SQLite file that does
    not exist yet is created (the command says so: a mistyped path makes a new catalog)."""
    engine = connect(settings.database_url)
    path = sqlite_path(engine.url)  # a new file: a mistyped path makes a new, empty catalog
    new_file = path if path is not None and not os.path.exists(path) else None
    before = None if new_file else migrate.current_revision(engine)
    migrate.upgrade(engine, revision)
    if new_file:
        click.echo(f"created a new catalog database at {new_file}")
    after = migrate.current_revision(engine)
    if before == after:
        click.echo(f"catalog at revision {after}: already there, nothing to do")
    else:
        click.echo(f"catalog migrated from revision {before or 'base'} to {after}")


@command.command()
@click.argument("revision")
@click.option(
    "--yes", is_flag=True, help="Do not ask: the downgrade drops tables and columns, data too."
)
@click.pass_obj
def downgrade(settings: Settings, revision: str, yes: bool) -> None:
    """Revert migrations down to REVISION (`base` removes every table, and the data in them).

    Asks first, unless --yes; without a terminal to ask on, --yes is needed.
    """
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(
                "db downgrade drops tables and columns and the data in them; pass --yes"
            )
        click.confirm(
            f"downgrade the catalog to {revision}, dropping the tables, columns and indexes "
            "later revisions added (and the data in those tables and columns)?",
            abort=True,
        )
    engine = connect(settings.database_url)
    migrate.downgrade(engine, revision)
    click.echo(f"catalog at revision {migrate.current_revision(engine) or 'base'}")


@command.command()
@click.pass_obj
def current(settings: Settings) -> None:
    """Print the database's revision and the latest one the code knows."""
    engine = connect(settings.database_url)
    revision = migrate.current_revision(engine)
    click.echo(f"current: {revision or 'base'}")
    click.echo(f"head:    {migrate.head_revision()}")
    if revision is not None and revision not in migrate.revisions():
        click.echo(
            f"warning: this code does not know revision {revision}: newer code migrated the "
            "catalog; run that code, or upgrade this one",
            err=True,
        )


@command.command("prune-changes")
@click.option(
    "--keep-days",
    type=Finite(min=0),
    default=Retention.keep_days,
    show_default=True,
    help="Keep every change logged within this many days.",
)
@click.option(
    "--keep-generations",
    type=click.IntRange(min=0),
    default=Retention.keep_generations,
    show_default=True,
    help="Keep every change within this many items generations of the catalog's.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; change nothing.")
@click.pass_obj
def prune_changes(settings: Settings, keep_days: float, keep_generations: int, dry_run: bool):
    """Delete old rows of the item change log (`item_changes`).

    A row goes only when it is older than --keep-days AND more than --keep-generations
    generations behind the catalog; the catalog records how far the log was pruned, in the
    same transaction. Serving workers follow the log every second, so they only read its
    newest rows. A reader whose mark is older than the pruned part (a worker stalled or cut
    off for longer than the retention) notices it and starts afresh: its live delta is
    rebuilt from the whole catalog, as at a worker's start, and its card cache drops its
    cards and snapshot. Nothing is missed; that worker only pays a rebuild.
    `recsys train` runs this with the defaults after it activates a bundle.
    """
    engine = connect_current(settings.database_url)
    retention = Retention(keep_days=keep_days, keep_generations=keep_generations)
    click.echo(
        f"item change log: keeping {keep_days:g} day{'' if keep_days == 1 else 's'} and "
        f"{keep_generations:,} generation{'' if keep_generations == 1 else 's'}"
        + (" (dry run)" if dry_run else "")
    )
    start = time.perf_counter()
    pruned = changes.prune_changes(engine, retention, dry_run=dry_run)
    click.echo(_summary(pruned, dry_run, time.perf_counter() - start))


def _summary(pruned: changes.Pruned, dry_run: bool, seconds: float) -> str:
    verb = "would delete" if dry_run else "deleted"
    return (
        f"{verb} {pruned.deleted:,} rows through generation {pruned.through:,} (was "
        f"{pruned.previous:,}; catalog at {pruned.generation:,}); {pruned.kept:,} rows "
        f"kept; {seconds:.2f} s"
    )


@command.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_obj
def backup(settings: Settings, file: Path, quiet: bool) -> None:
    """Back a SQLite catalog up into the new FILE while it serves.

    A consistent snapshot through SQLite's backup API, writers going on meanwhile, checked
    before it is kept (a `cp` of a live catalog misses the commits still in its -wal file
    and can be torn). A PostgreSQL catalog: pg_dump. Back up the artifacts folder (its
    bundles/) and the photos (RECSYS_IMAGES_ROOT, uploads/ too) beside it.
    """
    from recsys.catalog.backup import backup as back_up
    from recsys.files import out_path

    file = out_path(file)
    with _pages(quiet) as progress:
        size = back_up(settings.database_url, file, progress)
    click.echo(f"backed up to {file} ({size / 2**20:,.1f} MiB, checked)")


@contextlib.contextmanager
def _pages(quiet: bool):
    """A progress bar of pages copied -> the ``progress(done, total)`` SQLite's backup
    steps call."""
    from recsys.commands import bars

    with tqdm(total=0, unit="page", disable=not bars(quiet), leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield progress


@command.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Replace the catalog without asking.")
@click.option(
    "--other-catalog",
    is_flag=True,
    help="Replace the catalog with a backup of another catalog (refused without it).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_obj
def restore(settings: Settings, file: Path, yes: bool, other_catalog: bool, quiet: bool) -> None:
    """Replace the SQLite catalog with the backup FILE (from `recsys db backup`).

    Written in place through SQLite's own locks (never lay a copied file over the catalog: a
    -wal file left beside it is replayed into it, and the result is corrupt). A running
    service follows (its workers rebuild what they hold of the catalog). A backup
    older than the code is migrated to it. Erasures recorded since the backup are kept,
    and the users they name are erased again; the API keys are the catalog's own (a key
    revoked since stays revoked). All of it is prepared beside the catalog and copied over
    it in one step: a failure or a kill leaves the catalog as it was. Stop ingests too. A
    backup of another catalog (another shop's) is refused unless --other-catalog.
    """
    from recsys.catalog.backup import restore as put_back
    from recsys.catalog.backup import sqlite_file
    from recsys.model.bundle import unregistered_folders

    sqlite_file(settings.database_url)  # a PostgreSQL catalog is refused before asking
    if not yes:
        if not sys.stdin.isatty():  # it asked on stdout and stopped with "Aborted!", exit 1
            raise click.UsageError("db restore replaces the whole catalog; pass --yes")
        click.confirm(f"replace the catalog at {settings.database_url} with {file}?", abort=True)
    engine = connect(settings.database_url)
    with _pages(quiet) as progress:
        restored = put_back(engine, settings.database_url, file, progress, other_catalog)
    click.echo(f"restored {file} (revision {restored.revision})")
    if restored.migrated:
        click.echo("migrated to this code's revision")
    if restored.erasures:
        click.echo(
            f"kept {restored.erasures} erasure(s) recorded since the backup; erased "
            f"{len(restored.erased_users)} of its users again"
        )
    if restored.keys:
        click.echo(f"kept the catalog's {restored.keys} API key(s) (revocations included)")
    _say_if_the_active_bundle_is_gone(engine)
    lacking = unregistered_folders(engine, settings.artifacts_dir / "bundles")
    if lacking:  # trained since the backup, most likely
        click.echo(
            f"the restored registry lacks {len(lacking)} bundle folder(s) in "
            f"{settings.artifacts_dir / 'bundles'} ({', '.join(f.name for f in lacking)}): "
            "`recsys bundles register FOLDER` adds one"
        )


def _say_if_the_active_bundle_is_gone(engine) -> None:
    """A warning when the restored registry's active bundle has no folder (removed since the
    backup, by `bundles gc`): the service keeps serving what it served and refuses it."""
    from recsys.errors import ModelNotTrained
    from recsys.model.bundle import active_bundle

    try:
        bundle = active_bundle(engine)
    except ModelNotTrained:
        return
    if not Path(bundle.path).is_dir():
        click.echo(
            f"warning: the restored active bundle {bundle.version} has no folder at "
            f"{bundle.path} (removed since the backup); the service refuses it and keeps "
            "serving what it served: `recsys bundles activate VERSION` another one, or "
            "`recsys train`",
            err=True,
        )


@command.command("copy")
@click.option(
    "--to",
    "target_url",
    required=True,
    metavar="URL",
    help="The new catalog's database, e.g. postgresql+psycopg://user@host/shop: empty or new.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_obj
def copy(settings: Settings, target_url: str, quiet: bool) -> None:
    """Copy the whole catalog into another database, e.g. from SQLite to PostgreSQL.

    Every row as it is, in one transaction: items, users and events with their own ids and
    times, API keys (old keys keep working), the erasure record, the bundle registry (the
    active bundle serves from the new catalog without training) and the item change log.
    The target is migrated first and must hold none of those rows. Stop writers to the
    source first; then point RECSYS_DATABASE_URL at the new catalog, with the same
    artifacts folder.
    """
    from recsys.catalog.copy import copy_catalog
    from recsys.commands import bars

    if quiet:  # the target's migration steps too
        logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    source = connect_current(settings.database_url)
    copied = copy_catalog(source, connect(target_url), show_progress=bars(quiet))
    shown = ", ".join(f"{name} {count:,}" for name, count in copied.items() if count)
    click.echo(f"copied {shown}")
    click.echo("now point --database-url (or RECSYS_DATABASE_URL) at the new catalog")
