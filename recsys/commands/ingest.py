"""`recsys ingest`: load items and interactions into the catalog."""

from __future__ import annotations

import click


@click.group("ingest")
def command() -> None:
    """Load items or interactions from CSV, Parquet or JSON Lines."""
