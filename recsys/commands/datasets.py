"""`recsys datasets`: turn public data sets into ready-to-ingest files."""

from __future__ import annotations

import click


@click.group("datasets")
def command() -> None:
    """Prepare real data sets (MovieLens, Fashion-MNIST) as ready-to-ingest files."""
