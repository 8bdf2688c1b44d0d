"""`recsys bundles`: the registry of trained model bundles; roll forward or back."""

from __future__ import annotations

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from recsys.catalog import connect
from recsys.catalog.db import require_current_schema
from recsys.catalog.models import ModelBundle
from recsys.settings import Settings


@click.group("bundles")
def command() -> None:
    """List trained model bundles or choose the active one."""


@command.command("list")
@click.pass_obj
def list_bundles(settings: Settings) -> None:
    """Registered bundles, newest first; * marks the active one."""
    engine = connect(settings.database_url)
    require_current_schema(engine)
    with Session(engine) as session:
        bundles = session.scalars(select(ModelBundle).order_by(ModelBundle.id.desc())).all()
    if not bundles:
        click.echo("no bundles yet; run `recsys train`")
    for bundle in bundles:
        recall = bundle.metrics.get("validation_recall@10")
        quality = f"validation recall@10 {recall:.4f}" if isinstance(recall, float) else ""
        mark = "*" if bundle.is_active else " "
        click.echo(f"{mark} {bundle.version}  {bundle.created_at:%Y-%m-%d %H:%M}  {quality}")


@command.command("activate")
@click.argument("version")
@click.pass_obj
def activate(settings: Settings, version: str) -> None:
    """Make VERSION the active bundle (running services follow within seconds)."""
    from recsys.model.bundle import activate_bundle, read_manifest

    engine = connect(settings.database_url)
    require_current_schema(engine)
    with Session(engine) as session:
        path = session.scalar(select(ModelBundle.path).where(ModelBundle.version == version))
    if path is not None:
        read_manifest(path, verify=True)  # refuse a corrupt bundle before anyone loads it
    activate_bundle(engine, version)
    click.echo(f"active bundle: {version}")
