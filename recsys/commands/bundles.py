"""`recsys bundles`: the registry of trained model bundles; roll forward or back; clean up."""

from __future__ import annotations

import json
from pathlib import Path

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from recsys.catalog.db import connect_current
from recsys.catalog.models import ModelBundle
from recsys.settings import Settings


@click.group("bundles")
def command() -> None:
    """List trained model bundles, choose the active one, register a restored one, remove
    old ones."""


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (paths, metrics).")
@click.pass_obj
def list_bundles(settings: Settings, as_json: bool) -> None:
    """Registered bundles, newest first; * marks the active one."""
    from recsys.model.bundle import located, readable

    engine = connect_current(settings.database_url)
    with Session(engine) as session:
        bundles = session.scalars(select(ModelBundle).order_by(ModelBundle.id.desc())).all()
    if as_json:
        rows = [
            {
                "version": bundle.version,
                "active": bundle.is_active,
                "created_at": bundle.created_at.isoformat(),
                "path": located(bundle.path, bundle.version, settings.artifacts_dir),
                "metrics": bundle.metrics,
            }
            for bundle in bundles
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not bundles:
        click.echo("no bundles yet; run `recsys train`")
    for bundle in bundles:
        recall = bundle.metrics.get("validation_recall@10")
        quality = f"validation recall@10 {recall:.4f}" if isinstance(recall, float) else ""
        mark = "*" if bundle.is_active else " "
        path = located(bundle.path, bundle.version, settings.artifacts_dir)
        gone = "" if readable(path) else f"  (no bundle this code reads at {path})"
        click.echo(f"{mark} {bundle.version}  {bundle.created_at:%Y-%m-%d %H:%M}  {quality}{gone}")


@command.command("activate")
@click.argument("version")
@click.pass_obj
def activate(settings: Settings, version: str) -> None:
    """Make VERSION the active bundle.

    Each running worker checks the registry every 5 to 15 s (RECSYS_FLASK_RELOAD_CHECK_SECONDS,
    drawn per pause) and swaps once the bundle is loaded; POST /v1/admin/reload swaps the
    worker that answers at once.
    """
    from recsys.model.bundle import activate_bundle, located, read_manifest

    engine = connect_current(settings.database_url)
    with Session(engine) as session:
        path = session.scalar(select(ModelBundle.path).where(ModelBundle.version == version))
    manifest = None
    if path is not None:  # refuse a corrupt bundle before anyone loads it
        path = located(path, version, settings.artifacts_dir)
        manifest = read_manifest(path, verify=True)
    activate_bundle(engine, version)
    click.echo(f"active bundle: {version}")
    if manifest is not None:
        _erased_since(engine, path, manifest)


def _erased_since(engine, path: str, manifest: dict) -> None:
    """Warn when users the bundle holds were erased after its data was read."""
    from datetime import datetime

    from recsys.ingest.users import erased_in_bundle

    read_at = manifest.get("data_read_at") or manifest.get("created_at")
    try:
        moment = datetime.fromisoformat(read_at).replace(tzinfo=None)
    except (TypeError, ValueError):
        return
    if count := erased_in_bundle(engine, path, moment):
        users = "1 of this bundle's users was" if count == 1 else f"{count} of its users were"
        click.echo(
            f"warning: {users} erased after its data was read: its files "
            "still hold their data (feeds do not use it); train a new bundle to serve without "
            "it",
            err=True,
        )


@command.command("register")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--activate", is_flag=True, help="Make it the active bundle too.")
@click.pass_obj
def register(settings: Settings, folder: str, activate: bool) -> None:
    """Add a bundle FOLDER the registry lacks, e.g. one restored from a backup newer than the
    catalog's. FOLDER must be the artifacts folder's bundles/VERSION (copy it there first);
    every file's checksum is checked, and a bundle of another catalog (most of its items
    unknown here) is refused. A registered bundle whose folder moved needs no registering:
    the registry looks for it under the artifacts folder's bundles/ by its version."""
    from recsys.model.bundle import read_manifest, register_folder

    engine = connect_current(settings.database_url)
    version = register_folder(engine, folder, settings.artifacts_dir / "bundles", activate)
    click.echo(f"registered bundle {version}" + (" (active)" if activate else ""))
    if activate:
        _erased_since(engine, folder, read_manifest(folder, verify=False))


@command.command("gc")
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Newest bundles to keep; the active one is always kept as well.",
)
@click.pass_obj
def gc(settings: Settings, keep: int) -> None:
    """Remove old bundles and what interrupted training runs left in the artifacts dir."""
    from recsys.model.bundle import collect_garbage

    engine = connect_current(settings.database_url)
    result = collect_garbage(engine, settings.artifacts_dir / "bundles", keep)
    for version in result.removed:
        if version in result.left and not Path(result.left[version]).exists():
            click.echo(f"removed bundle {version} from the registry (its folder was gone)")
        elif version in result.left:  # another artifacts folder's: its row only
            click.echo(
                f"removed bundle {version} from the registry; its folder {result.left[version]} "
                "is outside this artifacts folder and was left on disk"
            )
        else:
            click.echo(f"removed bundle {version}")
    if result.orphans is None:
        click.echo("a training run is writing a bundle now: temporary folders left for later")
    for name in result.orphans or ():
        click.echo(f"removed {name} (left by an interrupted training run)")
    click.echo(f"kept {len(result.kept)} bundle(s): {', '.join(result.kept) or 'none'}")
