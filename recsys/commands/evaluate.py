"""`recsys evaluate`: the fused model against its baselines, offline, with a report."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from recsys.catalog.db import connect_current
from recsys.commands import Finite, OutPath, bars
from recsys.commands.model_options import (
    MODEL_OPTIONS,
    given_model_options,
    model_args,
    model_options,
    train_config,
)
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
    type=Finite(0, 1, min_open=True, max_open=True),
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
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Same seed, same numbers.",
)
@click.option(
    "--out",
    "out_dir",
    type=OutPath(),
    default=Path("reports"),
    show_default=True,
    help="The report goes into OUT/<timestamp>/.",
)
@click.option(
    "--users",
    type=click.IntRange(min=1),
    metavar="N",
    help="Evaluate a seeded sample of N users (their interactions only), for quick runs "
    "[default: all, or on big catalogs a sample of 5*10^9 / items users].",
)
@click.option(
    "--all-users",
    is_flag=True,
    help="Evaluate every user however big the catalog (no automatic sample).",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Item labels (e.g. Fashion-MNIST's labels.csv) to score the image vectors with.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.option(
    "--write-split",
    "split_dir",
    type=OutPath(),
    help="Only write the split as DIR/train.csv and DIR/heldout.csv (ingestable files): "
    "train a service's catalog on the first, replay the second with --replay.",
)
@click.option(
    "--replay",
    is_flag=True,
    help="Replay held-out events through the running service at --service, in time order: "
    "its feed before each event (and the previous item's similar items), then post the event. "
    "Reports next-event hit rate@k and MRR@k (k: 10, else the first of --k) without and "
    "with posting.",
)
@click.option("--service", metavar="URL", help="--replay: the service, e.g. http://127.0.0.1:8000")
@click.option(
    "--events",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="--replay: the events (e.g. --write-split's heldout.csv) [default: the held-out part "
    "of this catalog's split].",
)
@click.option(
    "--api-key",
    envvar="RECSYS_API_KEY",
    help="--replay: the service's API key (or RECSYS_API_KEY): events:write to post, and "
    "where reads are closed feeds:read and items:read too.",
)
@click.option("--no-post", is_flag=True, help="--replay: ask only (the feeds pass); post no event.")
@click.option(
    "--diversity",
    type=Finite(0, 1),
    help="--replay: MMR λ sent with every request [default: the service's].",
)
@model_options
@click.pass_obj
def evaluate(settings: Settings, split, holdout, cutoff, ks, seed, out_dir, users, **options):
    """Compare the fused model with popularity, item-kNN, ALS, BPR, EASE^R, RP3beta and
    content-only models (TF-IDF profile, tabular, image).

    Splits the catalog's interactions, trains every contender on the training part, scores
    them side by side and writes OUT/<timestamp>/ with report.md, report.html, metrics.json
    and plots (with a diversity table: MMR λ against recall and variety). The fused model is
    the one `recsys train` builds with the same model options (--model to
    --image-time-budget). With an active bundle trained with the same model config, the fused
    model's metrics are also recorded in the registry and in the bundle's evaluation.json.

    \b
    Log replay through the served path (the service's bundle trained on the training part):
      recsys evaluate --write-split split/          # then: a catalog with split/train.csv,
      recsys evaluate --replay --service URL --events split/heldout.csv
    """
    from recsys.evaluation import EvaluationConfig

    model = {name: options.pop(name) for name in MODEL_OPTIONS}
    if cutoff and split != "time-cutoff":
        raise click.UsageError("--cutoff applies to --split time-cutoff only")
    if users and options["all_users"]:
        raise click.UsageError("--users N and --all-users exclude each other: give one")
    replay_only = ("service", "events", "no_post", "diversity")  # not the env's API key
    given = [name for name in replay_only if options[name] not in (None, False)]
    if given and not options["replay"]:  # a whole offline evaluation ran, ignoring them
        names = ", ".join("--" + name.replace("_", "-") for name in given)
        verb = "applies" if len(given) == 1 else "apply"
        raise click.UsageError(f"{names} {verb} to --replay only")
    given = given_model_options(click.get_current_context())
    steps = [name for name in ("split_dir", "replay") if options[name]]
    if given and steps:  # neither trains a model: they were dropped unsaid
        names = ", ".join(given)
        step = "--write-split" if steps[0] == "split_dir" else "--replay"
        verb = "shapes" if len(given) == 1 else "shape"
        raise click.UsageError(
            f"{names} {verb} the model of the offline evaluation; {step} trains none"
        )
    if options["labels"] is not None:  # before the evaluation, not after it
        from recsys.evaluation.images import read_labels

        read_labels(options["labels"])
    config = EvaluationConfig(
        split=split,
        holdout=holdout,
        cutoff=cutoff,
        ks=ks,
        seed=seed,
        users=users,
        max_cells=None if options["all_users"] else EvaluationConfig.max_cells,
        fused=train_config(model, given=given),
    )
    if options["split_dir"] and options["replay"]:  # one ran, the other was dropped unsaid
        raise click.UsageError(
            "--write-split and --replay are two steps: write the split, train and serve a "
            "catalog on its train.csv, then replay its heldout.csv"
        )
    engine = connect_current(settings.database_url)
    _check_ks(engine, ks)
    if not options["split_dir"]:
        _make_out(out_dir)
    if options["split_dir"]:
        _write_split(engine, config, options["split_dir"])
    elif options["replay"]:
        _replay(engine, config, out_dir, options, bars(options["quiet"]))
    else:
        _offline(settings, engine, config, out_dir, options["labels"], options["quiet"])


def _make_out(out_dir: Path) -> None:
    """--out made and written in before any work: /proc/nope passed the path's check (root
    may write anywhere) and was a FileNotFoundError traceback after the whole evaluation."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as exc:
        raise click.BadParameter(
            f"{out_dir} cannot be written ({exc.strerror}); give a folder this user can write",
            param_hint="--out",
        ) from None


def _check_ks(engine, ks: tuple[int, ...]) -> None:
    """A --k given past the catalog's items is refused (every contender ranks users x the
    largest cut-off: 100,000 on 300 items was killed at 23 GB); the default cut-offs serve
    small catalogs as they are."""
    from recsys.model.data import count_items

    given = click.get_current_context().get_parameter_source("ks")
    if given is click.core.ParameterSource.DEFAULT:
        return
    n_items = count_items(engine)
    if n_items and max(ks) > n_items:
        raise click.BadParameter(
            f"cut-off {max(ks):,} is past the catalog's {n_items:,} items; give cut-offs up "
            f"to {n_items:,}",
            param_hint="--k",
        )


def _offline(settings: Settings, engine, config, out_dir: Path, labels, quiet: bool) -> None:
    from recsys.evaluation import evaluate as run_evaluation

    result = run_evaluation(
        engine,
        out_dir,
        config,
        labels=labels,
        show_progress=bars(quiet),
        command=_command(config, out_dir, labels),
        device=settings.device,
    )
    _echo(result, config.headline_k)


def _write_split(engine, config, split_dir: Path) -> None:
    from recsys.evaluation.replay import write_split
    from recsys.model.data import read_catalog

    paths = write_split(read_catalog(engine), config, split_dir)
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


def _replay(engine, config, out_dir: Path, options: dict, show_progress: bool) -> None:
    from recsys.evaluation.replay import (
        ReplayConfig,
        disagreement,
        not_stored,
        replay_report,
        unknown_said,
    )

    if not options["service"]:
        raise click.UsageError(
            "--replay needs --service URL (a running `recsys serve` or gunicorn)"
        )
    replay_config = ReplayConfig(
        k=config.headline_k,
        post=not options["no_post"],
        diversity=options["diversity"],
        api_key=options["api_key"],
    )
    command = _replay_command(config, out_dir, options)
    result = replay_report(
        engine,
        options["service"],
        options["events"],
        config,
        replay_config,
        out_dir,
        command,
        show_progress,
    )
    section = result.metrics["replay"]
    k = section["k"]
    if said := unknown_said(section):
        click.echo(said)
    for name in ("offline", "feeds", "posting"):
        if name in section:
            feed = section[name]["feed"]
            click.echo(
                f"{name:10s} feed next-event hit rate@{k} {feed['hit_rate']:.4f}, "
                f"MRR@{k} {feed['mrr']:.4f}"
            )
    if said := disagreement(section):
        click.echo(f"warning: {said}", err=True)
    similar = section.get("posting", {}).get("similar", {})
    if similar.get("events"):
        click.echo(
            f"{'similar':10s} next-event hit rate@{k} {similar['hit_rate']:.4f}, "
            f"MRR@{k} {similar['mrr']:.4f}"
        )
    if said := not_stored(section.get("posting", {}).get("rejected", {})):
        click.echo(f"posting: {said}")
    click.echo(f"report: {result.path / 'report.html'}")


def _replay_command(config, out_dir: Path, options: dict) -> str:
    parts = ["recsys evaluate --replay", f"--service {options['service']}"]
    if options["events"]:
        parts.append(f"--events {options['events']}")
    else:
        parts += [f"--split {config.split}", f"--holdout {config.holdout}", f"--seed {config.seed}"]
    if config.users:
        parts.append(f"--users {config.users}")
    parts.append(f"--k {','.join(map(str, config.ks))}")
    if options["no_post"]:
        parts.append("--no-post")
    if options["diversity"] is not None:
        parts.append(f"--diversity {options['diversity']}")
    return " ".join([*parts, f"--out {out_dir}"])


def _command(config, out_dir: Path, labels: Path | None) -> str:
    """The command line that reproduces this run (database given by the settings)."""
    parts = ["recsys evaluate", f"--split {config.split}", f"--holdout {config.holdout}"]
    if config.cutoff:
        parts.append(f"--cutoff {config.cutoff}")
    parts += [f"--k {','.join(map(str, config.ks))}", f"--seed {config.seed}", f"--out {out_dir}"]
    if config.users:
        parts.append(f"--users {config.users}")
    elif config.max_cells is None:
        parts.append("--all-users")
    if labels:
        parts.append(f"--labels {labels}")
    return " ".join([*parts, *model_args(config.fused)])


def _figure(value, width: int) -> str:
    """A metric to 4 places, or "n/a" where there is none: the split cannot measure it (no
    users held out cold items: the report says so too; it printed "nan"), or the contender
    gave every new item one score (its cold-item figures were a tie-break's)."""
    if value is None or value != value:
        return f"{'n/a':>{width}s}"
    return f"{value:{width}.4f}"


def _small_data(task: dict, k: int) -> None:
    """Say when the split is too small for its figures to mean much (``small_data_warnings``,
    which the report leads with too)."""
    from recsys.evaluation.report import small_data_warnings

    for said in small_data_warnings(task, k):
        click.echo(f"warning: {said}", err=True)


def _echo(result, k: int) -> None:
    contenders = result.metrics["contenders"]
    if contenders:
        click.echo(f"{'contender':20s} {f'recall@{k}':>10s} {f'cold-item recall@{k}':>20s}")
    for name, metrics in contenders.items():
        warm = _figure(metrics["overall"].get(f"recall@{k}"), 10)
        cold = _figure(metrics["cold_items"].get(f"recall@{k}"), 20)
        click.echo(f"{name:20s} {warm} {cold}")
    _small_data(result.metrics.get("task") or {}, k)
    compared = result.metrics.get("against_parts") or {}
    for key, label in (("warm", f"recall@{k}"), ("cold", f"cold-item recall@{k}")):
        if found := compared.get(key):
            noise = (
                "" if found["significant"] or found["verdict"] == "level" else " (not significant)"
            )
            users = "1 user" if found["users"] == 1 else f"{found['users']} users"
            click.echo(
                f"fused against {found['part']}: {label} {found['difference']:+.4f} "
                f"(standard error {found['stderr']:.4f}, {users}): "
                f"{found['verdict']}{noise}"
            )
    pages = result.metrics.get("item_to_item", {})
    for name, row in pages.get("rankers", {}).items():
        metric = f"hit_rate@{pages['k']}"
        click.echo(f"{name:20s} next-item {metric} {row[metric]:.4f}")
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
    elif result.not_recorded:
        click.echo(result.not_recorded)
    click.echo(f"report: {result.path / 'report.html'}")
