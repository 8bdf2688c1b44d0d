"""`recsys train`, `recsys recommend`, `recsys similar`: train a bundle and take a quick look."""

from __future__ import annotations

import json

import click

from recsys.catalog.db import connect_current
from recsys.commands import Finite, bars
from recsys.commands.model_options import given_model_options, model_options, train_config
from recsys.settings import Settings


def _ids(_ctx, _param, values) -> tuple[str, ...]:
    """The ids of a repeatable option, each checked by the id rule ingest and the HTTP API
    apply (``parse_id``: stripped, 1 to 255 characters, no control characters)."""
    from recsys.ingest.values import BadValue, parse_id

    try:
        return tuple(parse_id(value, "the id") for value in values)
    except BadValue as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("train")
@model_options
@click.option(
    "--index",
    "index_kind",
    type=click.Choice(["auto", "flat", "ivf", "hnsw"]),
    default="auto",
    show_default=True,
    help="FAISS index (auto: exact when small).",
)
@click.option(
    "--neighbours",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Similar items precomputed per item (items x N x 8 bytes in the bundle); 0 = none.",
)
@click.option(
    "--events",
    metavar="DIR",
    help="Train on the Parquet events in DIR (local, s3://, gs://, hdfs://; written by "
    "`recsys export interactions`) instead of the catalog's; items still come from the catalog.",
)
@click.option(
    "--cf-engine",
    type=click.Choice(["implicit", "spark"]),
    default="implicit",
    show_default=True,
    help="Where ALS runs: implicit (this process) or spark (RECSYS_SPARK_MASTER, default "
    'local[*]; needs pip install -e ".[spark]" and Java 17).',
)
@click.option(
    "--spark-solver",
    type=click.Choice(["cg", "exact", "mllib"]),
    default="cg",
    show_default=True,
    help="ALS solver of --cf-engine spark: cg (implicit's objective and default steps: 3 "
    "conjugate-gradient steps per row, on the executors), exact (implicit's objective, each "
    "step solved exactly) or mllib (MLlib's ALS: its own objective, implicit's settings mapped).",
)
@click.option("--no-activate", is_flag=True, help="Register the bundle without activating it.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the result as JSON (version, path, metrics, seconds per stage, chosen weights).",
)
@click.pass_obj
def train(
    settings: Settings,
    index_kind,
    neighbours,
    events,
    cf_engine,
    spark_solver,
    no_activate,
    quiet,
    as_json,
    **model,
):
    """Train on the catalog and register a new active model bundle.

    The model options (--model to --image-time-budget) are `recsys evaluate`'s too: an
    evaluation with the same ones scores the model this builds."""
    from recsys.model.index import IndexConfig
    from recsys.model.training import train as run_training

    if cf_engine == "spark" and model["model"] != "als":
        raise click.BadParameter("MLlib has no BPR; use --model als", param_hint="--cf-engine")
    config = train_config(
        model,
        given=given_model_options(click.get_current_context()),
        engine=cf_engine,
        spark_solver=spark_solver,
        index=IndexConfig(kind=index_kind),
        neighbours=neighbours,
        activate=not no_activate,
    )
    if cf_engine == "spark":  # started first: a missing Java fails before any work
        from recsys.engines.spark import session

        session(settings.spark_master)
    if settings.ray_address:  # joined first too: a bad address fails before any work
        from recsys.engines.ray_cluster import connect

        connect(settings.ray_address)
    engine = connect_current(settings.database_url)
    result = run_training(
        engine,
        settings.artifacts_dir,
        config,
        settings.device,
        show_progress=bars(quiet),
        ray_address=settings.ray_address,
        events=events,
    )
    report = {
        "version": result.version,
        "path": str(result.path),
        "active": result.active,
        "metrics": result.metrics,
        "seconds": result.seconds,
        "weights": result.weights,
        "cold_scale": result.cold_scale,
        "devices": result.devices,
    }
    if not as_json:
        click.echo(f"bundle {result.version} written to {result.path}")
        for name, value in sorted(result.metrics.items()):
            click.echo(f"  {name}: {value}")
        if "validation_cold_recall@10" in result.metrics:  # read as "new items make feeds"
            click.echo(
                "  (cold: new items ranked among themselves, for the validation users who "
                "took some; a feed shows them rarely unless asked for new_items, see README "
                '"New items in feeds")'
            )
    if result.active:  # workers rebuild their delta for the new bundle: a good time to prune
        from sqlalchemy.exc import DBAPIError

        from recsys.catalog.changes import prune_changes
        from recsys.catalog.db import database_problem

        try:
            pruned = prune_changes(engine)
        except DBAPIError as exc:  # the bundle is active: the training did not fail
            click.echo(
                f"warning: bundle {result.version} is active, but pruning the item change log "
                f"failed ({database_problem(exc, settings.database_url)}); run `recsys db "
                "prune-changes` later",
                err=True,
            )
        else:
            report["change_log"] = {"pruned": pruned.deleted, "kept": pruned.kept}
            if not as_json:
                click.echo(
                    f"item change log: {pruned.deleted:,} old rows pruned, {pruned.kept:,} kept"
                )
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))


def _diversity_option(command):
    """--diversity: MMR λ (recsys.model.diversity), the served default unless given."""
    from recsys.model.diversity import DEFAULT_DIVERSITY

    return click.option(
        "--diversity",
        type=Finite(0, 1),
        default=DEFAULT_DIVERSITY,
        show_default=True,
        help="MMR re-ranking over the items' content vectors: 0 is the plain ranking, up to 1 "
        "trades relevance for variety.",
    )(command)


def _group_option(command):
    """--group-by: one item per value of an attribute (RECSYS_GROUP_BY unless given)."""
    return click.option(
        "--group-by",
        metavar="ATTRIBUTE",
        help="List one item per value of this attribute, e.g. a style all of a product's "
        "sizes and colours share; leave out the asked item's own (and a user's seen "
        "items'). Default: RECSYS_GROUP_BY; '' for none.",
    )(command)


def _mode_option(command):
    """--mode: the item-to-item surface, as the HTTP API's mode."""
    return click.option(
        "--mode",
        type=click.Choice(["similar", "also"]),
        default="similar",
        show_default=True,
        help="similar: more like this (content-led); also: shoppers who viewed this also viewed.",
    )(command)


def _new_items_option(command):
    """--new-items: places of each feed kept for new items (``checked_new_items``)."""
    return click.option(
        "--new-items",
        type=click.IntRange(0, 1000),
        default=0,
        show_default=True,
        help="Places of each feed kept for new items (no events in the model's data: listed "
        "since it was trained, or never taken), which otherwise rarely reach a feed before the "
        "next training. At most -k.",
    )(command)


def _filter_option(command):
    """--filter NAME=VALUE (repeatable): the HTTP API's attribute filters (``parsed_filters``)."""
    return click.option(
        "--filter",
        "filters",
        multiple=True,
        metavar="NAME=VALUE",
        callback=parsed_filters,
        help="Only items passing this attribute filter, as the HTTP API's query parameters: "
        "brand=Nordvik, a range of a numeric or date attribute (price=100..500, price=..500, "
        "release_date=2025-01-01..; bounds inclusive), in_stock=false. Repeat a name for any "
        "of its values; every name must pass.",
    )(command)


def parsed_filters(_ctx, _param, pairs) -> dict | None:
    """``NAME=VALUE`` pairs as the library's filters (a repeated name: any of its values;
    in_stock: true or false), or a usage error naming --filter."""
    filters: dict = {}
    for pair in pairs:
        name, sign, value = pair.partition("=")
        if not sign or not name.strip():
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE, e.g. price=100..500")
        name = name.strip()
        if name == "in_stock":
            if value.lower() not in ("true", "false") or name in filters:
                raise click.BadParameter(f"in_stock takes true or false once, got {value!r}")
            filters[name] = value.lower() == "true"
            continue
        filters[name] = [*filters.get(name, []), value]
    one = {name: v[0] if isinstance(v, list) and len(v) == 1 else v for name, v in filters.items()}
    return one or None


def checked_new_items(new_items: int, k: int) -> None:
    """A usage error naming --new-items when it is more than -k."""
    if new_items > k:
        raise click.BadParameter(f"{new_items} is more than -k ({k})", param_hint="--new-items")


def _k_option(command):
    """-k, also spelt --k as the HTTP API's query parameter is."""
    return click.option(
        "-k",
        "--k",
        type=click.IntRange(1, 1000),
        default=10,
        show_default=True,
        help="How many items (the HTTP API's k, which takes 1-100; 1-1,000 here).",
    )(command)


@click.command("recommend")
@click.option(
    "--user", "user_ids", multiple=True, required=True, callback=_ids, help="User id (repeatable)."
)
@_k_option
@_diversity_option
@_new_items_option
@_group_option
@_filter_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with each item's reasons).")
@click.pass_obj
def recommend(settings: Settings, user_ids, k, diversity, new_items, group_by, filters, as_json):
    """Top-k items for users, as the service answers them: from the active bundle, the
    catalog's item writes since (stock, removals, new and changed items) and each user's
    events stored since (folded in)."""
    from recsys.serving import FeedRequest, home_feed, load_state

    checked_new_items(new_items, k)
    engine = connect_current(settings.database_url)
    state = load_state(engine, warm=False)
    group = checked_answer_options(state.recommender, settings, group_by, filters)
    request = FeedRequest(
        k=k, filters=filters, diversity=diversity, new_items=new_items, group_by=group
    )
    answers = [_answers(engine, home_feed(state, engine, user, request))[0] for user in user_ids]
    _show(engine, list(user_ids), answers, as_json, "user")


@click.command("similar")
@click.option(
    "--item", "item_ids", multiple=True, required=True, callback=_ids, help="Item id (repeatable)."
)
@_k_option
@_mode_option
@_diversity_option
@_group_option
@_filter_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with each item's reasons).")
@click.pass_obj
def similar(settings: Settings, item_ids, k, mode, diversity, group_by, filters, as_json):
    """Items most like the given items, as the service answers them: from the active bundle
    and the catalog's item writes since (stock, removals, new and changed items)."""
    from recsys.serving import served_recommender

    engine = connect_current(settings.database_url)
    recommender = served_recommender(engine)
    group = checked_answer_options(recommender, settings, group_by, filters)
    results = recommender.similar_items(
        list(item_ids), k=k, filters=filters, mode=mode, diversity=diversity, group_by=group
    )
    _show(engine, list(item_ids), _answers(engine, results), as_json, "item")


def checked_answer_options(
    recommender, settings: Settings, group_by: str | None, filters: dict | None
) -> str | None:
    """The attribute answers group by (--group-by, else RECSYS_GROUP_BY), after checking it
    and --filter against the served model, before any answer is made: a usage error naming
    the option (an attribute the model cannot group or filter on, a value its kind does not
    take)."""
    from recsys.errors import InvalidInput

    try:
        group = recommender.check_group_by(settings.group_by if group_by is None else group_by)
    except InvalidInput as exc:
        hint = "--group-by" if group_by is not None else "RECSYS_GROUP_BY"
        raise click.BadParameter(str(exc), param_hint=hint) from None
    try:
        recommender.filters.mask(recommender.check_filters(filters))
    except InvalidInput as exc:
        raise click.BadParameter(str(exc), param_hint="--filter") from None
    return group


def _answers(engine, results) -> list[dict]:
    """``results.to_json()``, a reason naming an item removed since the bundle counted in
    "other items you viewed", as the service answers."""
    import numpy as np

    from recsys.catalog.reads import items_present
    from recsys.model import explain

    named = {r.item_id for query in results.because for rs in query for r in rs if r.item_id}
    if named:
        ids = np.asarray(sorted(named), dtype=str)
        present = set(ids[items_present(engine, ids)].tolist())
        results.because = [explain.without_removed(query, present) for query in results.because]
    return results.to_json()


def _show(engine, queries, answers: list[dict], as_json: bool, key: str) -> None:
    """Each query's answer (``Results.to_json``) with titles from the catalog (JSON:
    ``titles`` beside ``ids``, and a ``title`` beside each reason's ``item_id``, as the HTTP
    API gives them)."""
    from recsys.catalog.reads import item_titles

    named = [r["item_id"] for a in answers for r in _naming_an_item(a)]
    asked = queries if key == "item" else []
    ids = list(dict.fromkeys([*asked, *(i for a in answers for i in a["ids"]), *named]))
    titles = dict(zip(ids, item_titles(engine, ids), strict=True))
    rows = []
    for query, answer in zip(queries, answers, strict=True):
        for reason in _naming_an_item(answer):
            reason["title"] = titles[reason["item_id"]]
        head = {key: query, "title": titles[query]} if key == "item" else {key: query}
        listed = {"ids": answer["ids"], "titles": [titles[i] for i in answer["ids"]]}
        rows.append({**head, **listed, **answer})  # ids and titles side by side
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        note = "  (popularity fallback: no history of this user)" if row["fallback"] else ""
        click.echo(" ".join(filter(None, [key, row[key], _quoted(row.get("title"))])) + note)
        ranked = zip(row["ids"], row["titles"], row["scores"], row["because"], strict=True)
        for rank, (item, title, score, reasons) in enumerate(ranked, 1):
            parts = [f"{rank:3d}. {item}", f"{score:.4f}", _quoted(title), _reasons(reasons)]
            click.echo("  " + "  ".join(filter(None, parts)))
        if not row["ids"]:
            click.echo(
                "  (none: no item has anything in common with it)"
                if key == "item"
                else "  (none passes: every item is seen, out of stock or filtered out)"
            )


def _naming_an_item(answer: dict):
    """The reasons of one query's answer that name an item (a history item: "item_id")."""
    return (r for reasons in answer["because"] for r in reasons if "item_id" in r)


def _quoted(title: str | None) -> str:
    """'"title"', or "" for an item without one."""
    return f'"{title}"' if title else ""


def _reasons(reasons: list[dict]) -> str:
    """ "because" in one line: each reason's label (and item, with its title) with its share
    of the score."""
    parts = [
        " ".join(filter(None, [r["label"], r.get("item_id"), _quoted(r.get("title"))]))
        + _share(r["share"])
        for r in reasons
    ]
    return "because " + "; ".join(parts) if parts else ""


def _share(share: float) -> str:
    """A reason's share as the CLI prints it: none when it is 0 (a fallback item without
    events), 3 decimals, or 2 significant digits when that would print 0."""
    if share == 0:
        return ""
    return f" {share:+.3f}" if abs(share) >= 5e-4 else f" {share:+.1e}"
