"""`recsys stats`: what the catalog holds."""

from __future__ import annotations

import click


@click.command("stats")
def command() -> None:
    """Counts of items, users, interactions and the active model bundle."""
