"""The `recsys` command line. Settings are read once here and passed down."""

from __future__ import annotations

import logging
import sys

import click

from recsys.errors import RecsysError
from recsys.settings import Settings


class RecsysGroup(click.Group):
    """Turns domain errors into one clear line on stderr instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RecsysError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(2)


@click.group(cls=RecsysGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database-url", metavar="URL", help="Catalog database [env RECSYS_DATABASE_URL].")
@click.option(
    "--artifacts-dir",
    type=click.Path(file_okay=False),
    help="Where model bundles are written [env RECSYS_ARTIFACTS_DIR].",
)
@click.option(
    "--device",
    help="auto (GPU when present), cpu, cuda or cuda:N [env RECSYS_DEVICE].",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.version_option(package_name="recsys")
@click.pass_context
def cli(ctx: click.Context, database_url, artifacts_dir, device, verbose) -> None:
    """Recommendations from a shop's own images, interactions and attributes.

    Typical flow: `recsys db upgrade`, `recsys ingest items ...`,
    `recsys ingest interactions ...`, `recsys stats`.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("recsys").setLevel(logging.INFO)
    try:
        ctx.obj = Settings.load(
            database_url=database_url, artifacts_dir=artifacts_dir, device=device
        )
    except RecsysError as exc:
        raise click.UsageError(str(exc)) from exc


def _register_commands() -> None:
    from recsys.commands import datasets, db, ingest, stats

    # Each module in recsys/commands/ defines one click `command`; add new ones to this tuple.
    for module in (db, ingest, stats, datasets):
        cli.add_command(module.command)


_register_commands()


def main() -> None:
    cli(prog_name="recsys")
