"""`recsys stats`: what the catalog holds."""

from __future__ import annotations

import json

import click

from recsys.catalog import connect
from recsys.settings import Settings
from recsys.stats import catalog_stats


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_obj
def command(settings: Settings, as_json: bool) -> None:
    """Counts of items (with/without images), users, interactions by event type, attribute
    kinds, and the active model bundle."""
    stats = catalog_stats(connect(settings.database_url), settings.artifacts_dir)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    click.echo(f"catalog id:   {stats['catalog_id'] or 'none'}")
    click.echo(
        f"items:        {stats['items']} ({stats['items_with_images']} with images, "
        f"{stats['items_in_stock']} in stock)"
    )
    click.echo(f"users:        {stats['users']}")
    click.echo(f"interactions: {stats['interactions']}")
    for event, count in stats["events"].items():
        click.echo(f"  {event}: {count}")
    times = stats["event_times"]
    if stats["interactions"]:
        span = f"{times['first']} to {times['last']} UTC" if times["first"] else "no times"
        odd = [f"{times['without_time']} without a time"] if times["without_time"] else []
        if times["past_the_clock"]:
            odd.append(f"{times['past_the_clock']} over a day past this machine's clock")
        click.echo(f"  times: {span}" + (f" ({', '.join(odd)})" if odd else ""))
    if stats["attributes"]:
        kinds = ", ".join(f"{name} ({kind})" for name, kind in stats["attributes"].items())
        click.echo(f"attributes:   {kinds}")
    bundle = stats["active_bundle"]
    click.echo(f"active model: {bundle['version'] + ' at ' + bundle['path'] if bundle else 'none'}")
    if bundle and not bundle["readable"]:
        click.echo(
            "  its folder holds no bundle this code can read: restore it there (or under "
            "the artifacts folder's bundles/), or `recsys bundles activate` another"
        )
    since = (bundle or {}).get("since")
    if since is not None:
        grown = (
            f", {since['events'] / since['trained_on']:.1%} of the {since['trained_on']:,} "
            "it was trained on"
            if since["trained_on"]
            else "; it was trained on none"
        )
        click.echo(
            f"  since its data was read ({since['data_read_at']} UTC): {since['events']:,} "
            f"events of {since['users']:,} users stored{grown if since['events'] else ''}"
        )
    metrics = (bundle or {}).get("metrics") or {}
    if "validation_recall@10" in metrics:  # what training measured on its validation slice
        line = f"  validation recall@10 {metrics['validation_recall@10']:.4f}"
        if metrics.get("validation_cold_recall@10") is not None:
            line += f", new items among themselves {metrics['validation_cold_recall@10']:.4f}"
        click.echo(line + " (--json: every figure)")
    elif "validation" in metrics:  # why it did not measure (too few shoppers, ...)
        click.echo(f"  weights stage {metrics['validation']}")
