"""`recsys users erase`: remove shoppers and all their events (a request to erase their data)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from recsys.catalog.db import connect_current
from recsys.errors import InvalidInput
from recsys.ingest.users import erase_users
from recsys.settings import Settings


@click.group("users")
def command() -> None:
    """Shoppers: what is held of one, or erase one or many, with all their events."""


@command.command("show")
@click.argument("user_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
@click.pass_obj
def show(settings: Settings, user_id: str, as_json: bool) -> None:
    """What the catalog and the model bundles hold of USER_ID (a subject access request):
    the user's row, every event of theirs, a recorded erasure, and the bundles whose files
    still hold their factors and history."""
    from recsys.ingest.users import user_record

    try:
        record = user_record(connect_current(settings.database_url), user_id)
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(record, indent=2, ensure_ascii=False))
        return
    events = record["events"]
    if record["in_catalog"]:
        click.echo(f"user {record['user_id']!r}: in the catalog since {record['created_at']} UTC, "
                   f"{len(events)} {'event' if len(events) == 1 else 'events'}")  # fmt: skip
    else:
        click.echo(f"user {record['user_id']!r}: not in the catalog")
    if record["erased_at"]:
        said = "events dated up to a day after it are refused"
        click.echo(f"  erased at {record['erased_at']} UTC ({said})")
    held = [b["version"] + (" (active)" if b["active"] else "") for b in record["bundles"]]
    click.echo(f"  model bundles holding their data: {', '.join(held) if held else 'none'}")
    for event in events:
        at = event["timestamp"] or "(no time)"
        click.echo(f"  {at}  {event['event']}  {event['item_id']}  weight {event['weight']:g}"
                   f"  stored {event['stored_at']}")  # fmt: skip


@command.command("erase")
@click.argument("user_ids", nargs=-1)
@click.option(
    "--file",
    "from_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file of user ids, one per line, besides USER_IDS (blank lines skipped; a first "
    "line `user_id` is a header; ids may be in double quotes).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was erased as JSON.")
@click.pass_obj
def erase(settings: Settings, user_ids: tuple[str, ...], from_file: Path | None, as_json: bool):
    """Delete USER_IDS and every event of theirs from the catalog, all or none, and record
    the erasures (ids the catalog does not have too).

    From then on, events of theirs from before the erasure are refused at ingest and left
    out of training from event folders, and the service answers them as users never seen
    (popularity; or from their new events only), on every worker. Bundles trained before
    still hold their factors and history, and their events shaped the items' vectors: run
    `recsys train`, then `recsys bundles gc --keep 0`, to finish.
    """
    ids = list(user_ids)
    if from_file is not None:
        ids += _ids_of(from_file)
    if not ids:
        raise click.UsageError("name the users to erase: USER_IDS or --file FILE")
    try:
        erased = erase_users(connect_current(settings.database_url), ids)
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"erased": erased.users, "events": erased.events,
                               "unknown": erased.unknown}))  # fmt: skip
        return
    users = "1 user" if len(erased.users) == 1 else f"{len(erased.users)} users"
    events = "1 event" if erased.events == 1 else f"{erased.events} events"
    click.echo(f"erased {users} and {events} of theirs")
    if erased.unknown:
        shown = ", ".join(repr(u) for u in erased.unknown[:10])
        more = f" and {len(erased.unknown) - 10} more" if len(erased.unknown) > 10 else ""
        click.echo(
            f"not in the catalog (nothing to delete; the erasure is recorded): {shown}{more}",
            err=True,
        )
    if erased.users:
        click.echo(
            "bundles trained before still hold them: run `recsys train`, then "
            "`recsys bundles gc --keep 0`, to finish",
            err=True,
        )


def _ids_of(path: Path) -> list[str]:
    """The ids of a file of one id a line, as spreadsheets and scripts write them: a byte
    order mark dropped, a first line `user_id` taken for a header, an id in double quotes
    unquoted, blank lines skipped (a header was erased as an id, and a quoted id was not)."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    if lines and lines[0].strip('"').lower() == "user_id":
        lines = lines[1:]
    unquoted = [
        line[1:-1].replace('""', '"') if len(line) > 1 and line[0] == line[-1] == '"' else line
        for line in lines
    ]
    return [user_id for user_id in unquoted if user_id]
