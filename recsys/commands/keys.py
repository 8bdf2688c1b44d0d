"""`recsys keys`: API keys for the HTTP service (create, list, revoke)."""

from __future__ import annotations

import json

import click

from recsys.catalog.db import connect_current
from recsys.catalog.keys import create_key, list_keys, revoke_key
from recsys.scopes import SCOPES
from recsys.settings import Settings


@click.group("keys")
def command() -> None:
    """Create, list or revoke API keys for the HTTP service."""


@command.command("create")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(list(SCOPES)),
    help="What the key may do; repeat for several. "
    + "; ".join(f"{name}: {does}" for name, does in SCOPES.items()),
)
@click.option("--name", default="", help="A label to recognise the key by (who or what uses it).")
@click.pass_obj
def create(settings: Settings, scopes: tuple[str, ...], name: str) -> None:
    """Create a key and print it once: store it now, it cannot be shown again."""
    engine = connect_current(settings.database_url)
    info, key = create_key(engine, scopes, name)
    click.echo(key)
    click.echo(
        f"key {info.key_id} ({' '.join(info.scopes)}): shown once; send it as "
        "`Authorization: Bearer <key>`",
        err=True,
    )


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
def list_command(settings: Settings, as_json: bool) -> None:
    """Every key: id, scopes, name, created, revoked (keys themselves are never stored)."""
    engine = connect_current(settings.database_url)
    keys = list_keys(engine)
    if as_json:
        rows = [
            {
                "key_id": info.key_id,
                "name": info.name,
                "scopes": list(info.scopes),
                "active": info.active,
                "created_at": info.created_at.isoformat(),
                "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
            }
            for info in keys
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not keys:
        click.echo("no API keys yet; create one with `recsys keys create --scope ...`")
    for info in keys:
        state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
        click.echo(
            f"{info.key_id}  {state:<24} {info.created_at:%Y-%m-%d %H:%M}  "
            f"{' '.join(info.scopes)}  {info.name}".rstrip()
        )


@command.command("revoke")
@click.argument("key_id")
@click.pass_obj
def revoke(settings: Settings, key_id: str) -> None:
    """Revoke KEY_ID (the id `recsys keys list` shows, or the key itself); services stop
    taking it within 30 s."""
    engine = connect_current(settings.database_url)
    before = {info.key_id: info for info in list_keys(engine)}
    info = revoke_key(engine, key_id)
    earlier = before.get(info.key_id)
    if earlier is not None and not earlier.active:  # it said "revoked" again
        click.echo(f"{info.key_id} was already revoked at {earlier.revoked_at:%Y-%m-%d %H:%M} UTC")
        return
    click.echo(
        f"revoked {info.key_id} ({' '.join(info.scopes)}); a service worker that checked it "
        "lately accepts it until its key cache expires (30 s by default, "
        "RECSYS_FLASK_KEY_CACHE_SECONDS)"
    )
