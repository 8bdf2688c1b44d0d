"""The options that shape the trained model, declared once: `recsys train` and `recsys
evaluate` both take them (``model_options``) and build the ``TrainConfig`` from them with
``train_config``, so an evaluation scores what a training with the same options builds.

Options that only say where or how a bundle is built and served (``--index``,
``--neighbours``, ``--events``, ``--cf-engine``, ``--no-activate``) stay on `recsys train`.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence

import click

from recsys.commands import Finite

# recsys.vision.methods.METHODS, not imported here: it loads torch.
IMAGE_METHODS = ("simclr", "byol", "dino")

# The keyword names the options below give the command, in their order.
MODEL_OPTIONS = (
    "model",
    "factors",
    "iterations",
    "event_weights",
    "column_weights",
    "half_life_days",
    "crawler_share",
    "image_method",
    "image_epochs",
    "image_time_budget",
)

_OPTIONS = (
    click.option(
        "--model",
        type=click.Choice(["als", "bpr"]),
        default="als",
        show_default=True,
        help="Collaborative model.",
    ),
    click.option(
        "--factors",
        type=click.IntRange(min=1),
        default=32,
        show_default=True,
        help="CF latent factors. Not given, ALS's weights stage also tries 64 and keeps "
        "them when ALS alone ranks the validation users' items significantly better.",
    ),
    click.option(
        "--iterations",
        type=click.IntRange(min=1),
        default=15,
        show_default=True,
        help="CF iterations.",
    ),
    click.option(
        "--event-weight",
        "event_weights",
        multiple=True,
        metavar="EVENT=W",
        help="Confidence multiplier of an event type, e.g. purchase=4 (repeatable).",
    ),
    click.option(
        "--column-weight",
        "column_weights",
        multiple=True,
        metavar="ATTRIBUTE=W",
        help="Weight of an attribute in the tabular block (default 1, 0 to 100; repeatable), "
        "e.g. oem_number=4 so that a part's other brands' equivalents come first.",
    ),
    click.option(
        "--half-life-days",
        type=Finite(min=0),
        default=180.0,
        show_default=True,
        help="Older events of a user count half every this many days; 0 = no decay.",
    ),
    click.option(
        "--crawler-share",
        type=Finite(0, 1, max_open=True),
        default=0.5,
        show_default=True,
        help="Leave out users whose events span more than this share of the catalog (and at "
        "least 1,000 items) as crawlers; 0 keeps every user.",
    ),
    click.option(
        "--image-method",
        type=click.Choice(IMAGE_METHODS),
        default="simclr",
        show_default=True,
        help="Self-supervised method of the image encoder (when items have images).",
    ),
    click.option(
        "--image-epochs",
        type=click.IntRange(min=1),
        default=5,
        show_default=True,
        help="Image encoder epochs; 10,000 small photos take 15-20 s each on 2 CPU cores.",
    ),
    click.option(
        "--image-time-budget",
        type=Finite(min=0, min_open=True),
        metavar="SECONDS",
        help="Train the image encoder for this long instead of --image-epochs.",
    ),
)


def model_options(command):
    """Add the model-shaping options to a click command (keyword names: MODEL_OPTIONS)."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def train_config(
    options: Mapping,
    engine: str = "implicit",
    spark_solver: str = "cg",
    given: Sequence[str] = (),
    **rest,
):
    """The ``TrainConfig`` of the model options in ``options`` (keyed by MODEL_OPTIONS);
    ``engine`` and ``spark_solver`` say where ALS runs, ``rest`` are TrainConfig's other
    fields (index, neighbours, activate). ``given``: the options given on the command line
    (``given_model_options``): ``--factors`` given pins the factors, which the weights stage
    otherwise chooses from it and ``WeightGrid.factors``."""
    from recsys.model.cf import CFConfig
    from recsys.model.config import ImageConfig, TrainConfig, WeightGrid
    from recsys.model.tabular import TabularConfig

    cf = CFConfig(
        model=options["model"],
        factors=options["factors"],
        iterations=options["iterations"],
        event_weights=parse_event_weights(options["event_weights"]),
        half_life_days=options["half_life_days"] or None,
        engine=engine,
        spark_solver=spark_solver,
    )
    image = ImageConfig(
        method=options["image_method"],
        epochs=options["image_epochs"],
        time_budget=options["image_time_budget"],
    )
    if "--factors" in given:
        rest["grid"] = WeightGrid(factors=())
    columns = parse_column_weights(options.get("column_weights", ()))
    if columns:
        rest["tabular"] = TabularConfig(column_weights=columns)
    return TrainConfig(cf=cf, image=image, crawler_share=options["crawler_share"], **rest)


def model_args(config) -> list[str]:
    """The model options that give ``config`` (a TrainConfig), as command-line words: the
    report's command that reproduces a run."""
    cf, image = config.cf, config.image
    args = ["--model", cf.model]
    if not config.grid.factors:  # pinned; else chosen by the weights stage from the default
        args += ["--factors", str(cf.factors)]
    args += ["--iterations", str(cf.iterations)]
    for event, weight in sorted(cf.event_weights.items()):
        args += ["--event-weight", shlex.quote(f"{event}={float(weight)!r}")]
    for name, weight in sorted(config.tabular.column_weights.items()):
        args += ["--column-weight", shlex.quote(f"{name}={float(weight)!r}")]
    args += ["--half-life-days", repr(float(cf.half_life_days or 0))]
    args += ["--crawler-share", repr(float(config.crawler_share)), "--image-method", image.method]
    if image.time_budget is not None:
        return [*args, "--image-time-budget", repr(float(image.time_budget))]
    return [*args, "--image-epochs", str(image.epochs)]


def given_model_options(ctx: click.Context) -> list[str]:
    """The model options given on the command line (not left at their defaults)."""
    default = click.core.ParameterSource.DEFAULT
    return [
        param.opts[0]
        for param in ctx.command.params
        if param.name in MODEL_OPTIONS and ctx.get_parameter_source(param.name) is not default
    ]


# The largest --column-weight: a column at 100 already outweighs every other of a catalog.
MAX_COLUMN_WEIGHT = 100.0


def parse_column_weights(pairs) -> dict[str, float]:
    """``ATTRIBUTE=W`` pairs -> ``{attribute: W}``, each W a number from 0 to
    ``MAX_COLUMN_WEIGHT`` (``TabularConfig.column_weights``)."""
    bound = (MAX_COLUMN_WEIGHT, f"{MAX_COLUMN_WEIGHT:g}")
    return _named_weights(pairs, "ATTRIBUTE", bound, "oem_number=4", "--column-weight")


def parse_event_weights(pairs) -> dict[str, float]:
    """``EVENT=W`` pairs -> ``{event: W}``, each W a number from 0 to the bound of an event's
    weight in the HTTP API and ingest (``MAX_WEIGHT``): `--event-weight rating=1e300` failed
    at training ("NaN encountered in factors") without naming the option."""
    from recsys.ingest.values import MAX_WEIGHT

    bound = (MAX_WEIGHT, f"{MAX_WEIGHT:,}")
    return _named_weights(pairs, "EVENT", bound, "purchase=4", "--event-weight")


def _named_weights(pairs, key: str, bound: tuple, example: str, option: str) -> dict:
    """``KEY=W`` pairs -> ``{key: W}``, each W a finite number from 0 to ``bound`` (the
    number, as written in the message); anything else a usage error naming ``option``."""
    weights = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not name.strip() or not (math.isfinite(weight) and 0 <= weight <= bound[0]):
            raise click.BadParameter(
                f"{pair!r} is not {key}=NUMBER with a number from 0 to {bound[1]}, e.g. {example}",
                param_hint=option,
            ) from None
        weights[name.strip()] = weight
    return weights
