"""`recsys db`: apply and inspect the catalog's Alembic migrations."""

from __future__ import annotations

import logging

import click

from recsys.catalog import connect, migrate
from recsys.settings import Settings


@click.group("db")
def command() -> None:
    """Create or migrate the catalog database."""
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)  # show each step


@command.command()
@click.argument("revision", default="head")
@click.pass_obj
def upgrade(settings: Settings, revision: str) -> None:
    """Apply migrations up to REVISION (default: head, the latest)."""
    engine = connect(settings.database_url)
    migrate.upgrade(engine, revision)
    click.echo(f"catalog at revision {migrate.current_revision(engine)}")


@command.command()
@click.argument("revision")
@click.pass_obj
def downgrade(settings: Settings, revision: str) -> None:
    """Revert migrations down to REVISION (`base` removes every table)."""
    engine = connect(settings.database_url)
    migrate.downgrade(engine, revision)
    click.echo(f"catalog at revision {migrate.current_revision(engine) or 'base'}")


@command.command()
@click.pass_obj
def current(settings: Settings) -> None:
    """Print the database's revision and the latest one the code knows."""
    engine = connect(settings.database_url)
    click.echo(f"current: {migrate.current_revision(engine) or 'base'}")
    click.echo(f"head:    {migrate.head_revision()}")
