"""`recsys evaluate`: the fused model against its baselines, offline, with a report."""

from __future__ import annotations

from pathlib import Path

import click

from recsys.catalog.db import connect_current
from recsys.model.split import SPLITS
from recsys.settings import Settings


def _parse_ks(ctx, param, value: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a list of integers, e.g. 5,10,20,50") from None
    if not ks or min(ks) < 1:
        raise click.BadParameter(f"{value!r}: give positive cut-offs, e.g. 5,10,20,50")
    return ks


@click.command("evaluate")
@click.option(
    "--split",
    type=click.Choice(SPLITS),
    default="temporal",
    show_default=True,
    help="temporal: each user's latest share; time-cutoff: one global time; random: per user.",
)
@click.option(
    "--holdout",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of interactions held out.",
)
@click.option(
    "--cutoff",
    metavar="TIME",
    help="time-cutoff: ISO time, e.g. 2015-01-01 [default: the 1 - holdout time quantile].",
)
@click.option(
    "--k",
    "ks",
    default="5,10,20,50",
    show_default=True,
    callback=_parse_ks,
    help="Comma-separated cut-offs.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same numbers.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="The report goes into OUT/<timestamp>/.",
)
@click.option(
    "--users",
    type=click.IntRange(min=1),
    metavar="N",
    help="Evaluate a seeded sample of N users (their interactions only), for quick runs.",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Item labels (e.g. Fashion-MNIST's labels.csv) to score the image vectors with.",
)
@click.option(
    "--image-epochs",
    type=click.IntRange(min=1),
    help="Epochs of the image encoder trained on the catalog's images [default: its own].",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_obj
def evaluate(
    settings: Settings,
    split,
    holdout,
    cutoff,
    ks,
    seed,
    out_dir,
    users,
    labels,
    image_epochs,
    quiet,
):
    """Compare the fused model with popularity, item-kNN, ALS, BPR and content-only models.

    Splits the catalog's interactions, trains every contender on the training part, scores
    them side by side and writes OUT/<timestamp>/ with report.md, report.html, metrics.json
    and plots. With an active bundle, the fused model's metrics are also recorded in the
    registry and in the bundle's evaluation.json.
    """
    from recsys.evaluation import EvaluationConfig
    from recsys.evaluation import evaluate as run_evaluation

    if cutoff and split != "time-cutoff":
        raise click.UsageError("--cutoff applies to --split time-cutoff only")
    config = EvaluationConfig(
        split=split,
        holdout=holdout,
        cutoff=cutoff,
        ks=ks,
        seed=seed,
        users=users,
        image_epochs=image_epochs,
    )
    engine = connect_current(settings.database_url)
    result = run_evaluation(
        engine,
        out_dir,
        config,
        labels=labels,
        show_progress=not quiet,
        command=_command(config, out_dir, labels),
        device=settings.device,
    )
    _echo(result, config.headline_k)


def _command(config, out_dir: Path, labels: Path | None) -> str:
    """The command line that reproduces this run (database given by the settings)."""
    parts = ["recsys evaluate", f"--split {config.split}", f"--holdout {config.holdout}"]
    if config.cutoff:
        parts.append(f"--cutoff {config.cutoff}")
    parts += [f"--k {','.join(map(str, config.ks))}", f"--seed {config.seed}", f"--out {out_dir}"]
    if config.users:
        parts.append(f"--users {config.users}")
    if labels:
        parts.append(f"--labels {labels}")
    if config.image_epochs:
        parts.append(f"--image-epochs {config.image_epochs}")
    return " ".join(parts)


def _echo(result, k: int) -> None:
    contenders = result.metrics["contenders"]
    if contenders:
        click.echo(f"{'contender':20s} {f'recall@{k}':>10s} {f'cold-item recall@{k}':>20s}")
    for name, metrics in contenders.items():
        warm = metrics["overall"].get(f"recall@{k}", float("nan"))
        cold = metrics["cold_items"].get(f"recall@{k}", float("nan"))
        click.echo(f"{name:20s} {warm:10.4f} {cold:20.4f}")
    images = result.metrics.get("images")
    if images:
        for name in ("image vectors", "raw pixels"):
            row = images[name]
            click.echo(
                f"{name:20s} kNN accuracy {row['knn_accuracy']:.4f}, "
                f"precision@10 {row['precision@10']:.4f}"
            )
    if result.bundle:
        click.echo(f"recorded with bundle {result.bundle}")
    click.echo(f"report: {result.path / 'report.html'}")
