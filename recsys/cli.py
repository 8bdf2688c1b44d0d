"""The `recsys` command line. Settings are read once here and passed down."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys

import click

from recsys.errors import Interrupted, RecsysError, Terminated, TryAgain
from recsys.logs import TEXT_TIME, formatter
from recsys.settings import Settings, set_by

# name -> ("module:attribute", one-line help). A command's module is imported only when that
# command runs, so `recsys ingest` does not pay for importing torch. Add new commands here.
COMMANDS = {
    "db": (
        "recsys.commands.db:command",
        "Create or migrate the catalog database; back it up, restore or copy it.",
    ),
    "ingest": ("recsys.commands.ingest:command", "Load items or interactions into the catalog."),
    "stats": ("recsys.commands.stats:command", "Counts of what the catalog holds."),
    "datasets": ("recsys.commands.datasets:command", "Prepare real data sets as ingestable files."),
    "export": (
        "recsys.commands.export:command",
        "Write the catalog's events, or every feed or similar list, as Parquet.",
    ),
    "train-images": (
        "recsys.commands.images:train_images",
        "Train the self-supervised image encoder.",
    ),
    "embed-images": ("recsys.commands.images:embed_images", "Embed images with a trained encoder."),
    "train": ("recsys.commands.train:train", "Train and activate a fused model bundle."),
    "recommend": ("recsys.commands.train:recommend", "Top-k items for users (active bundle)."),
    "similar": ("recsys.commands.train:similar", "Items like the given items (active bundle)."),
    "evaluate": ("recsys.commands.evaluate:evaluate", "Compare the model with baselines, offline."),
    "catalog": (
        "recsys.commands.catalog:command",
        "Catalog health: duplicate listings, outliers, clusters, few-label tags.",
    ),
    "bundles": (
        "recsys.commands.bundles:command",
        "List model bundles; activate one (rollback), register a restored one, remove old ones.",
    ),
    "keys": ("recsys.commands.keys:command", "Create, list or revoke API keys for the service."),
    "users": ("recsys.commands.users:command", "Erase shoppers and all their events."),
    "serve": ("recsys.commands.serve:serve", "Serve the HTTP API and web page (development)."),
}


class RecsysGroup(click.Group):
    """Loads subcommands lazily from COMMANDS and turns domain errors into one clear line on
    stderr instead of a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attribute = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])

    def invoke(self, ctx: click.Context):
        from sqlalchemy.exc import DBAPIError

        try:
            return super().invoke(ctx)
        except click.NoSuchOption as exc:  # "Did you mean '--events'?" for `train --device`
            _hint_global(exc)
            raise
        except Interrupted as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            # the shell's codes for Ctrl-C and SIGTERM: not 1, ingest's "rows rejected"
            ctx.exit(143 if isinstance(exc.__context__, Terminated) else 130)
        except KeyboardInterrupt as exc:
            stopped = "terminated" if isinstance(exc, Terminated) else "interrupted"
            click.secho(f"error: {stopped}; what finished before it is kept", fg="red", err=True)
            ctx.exit(143 if isinstance(exc, Terminated) else 130)
        except TryAgain as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(TRY_AGAIN)
        except RecsysError as exc:
            from recsys.catalog.db import passing

            path = getattr(exc, "path", None)
            click.secho(f"error: {exc}" + (f" ({path})" if path else ""), fg="red", err=True)
            # a training stopped by the database going away or a lock: it may pass
            cause = exc.__cause__
            ctx.exit(TRY_AGAIN if isinstance(cause, DBAPIError) and passing(cause) else 2)
        except OSError as exc:  # a full disk, a read-only folder... (recsys.files.REFUSED)
            from recsys.files import refused

            if (line := refused(exc)) is None:
                raise
            click.secho(f"error: {line}", fg="red", err=True)
            ctx.exit(2)
        except DBAPIError as exc:  # the server is down or refuses us; the file is locked, full...
            from recsys.catalog.db import database_problem, passing

            url = getattr(ctx.obj, "database_url", None)
            click.secho(f"error: {database_problem(exc, url)}", fg="red", err=True)
            for note in getattr(exc, "__notes__", ()):  # what a command had done by then
                click.secho(f"  {note}", fg="red", err=True)
            ctx.exit(TRY_AGAIN if passing(exc) else 2)


GLOBAL_OPTIONS = ("--database-url", "--artifacts-dir", "--device", "--ray-address")


def _hint_global(exc: click.NoSuchOption) -> None:
    """A global option given after the command: say it goes before it."""
    name = exc.option_name.split("=")[0]
    flag = name in ("-v", "--verbose")
    if (name not in GLOBAL_OPTIONS and not flag) or exc.ctx is None:
        return
    command = exc.ctx.command_path.split(" ", 1)[-1]
    given = name if flag else f"{name} VALUE"
    exc.message = (
        f"{name} is an option of recsys itself: give it before the command, e.g. "
        f"`recsys {given} {command} ...`"
    )
    exc.possibilities = None


@click.group(cls=RecsysGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database-url", metavar="URL", help="Catalog database [env RECSYS_DATABASE_URL].")
@click.option(
    "--artifacts-dir",
    type=click.Path(file_okay=False),
    help="Where model bundles are written [env RECSYS_ARTIFACTS_DIR].",
)
@click.option(
    "--device",
    help="auto (GPU when present), cpu, cuda or cuda:N [env RECSYS_DEVICE].",
)
@click.option(
    "--ray-address",
    metavar="ADDRESS",
    help="Run image training, image embedding and the neighbour table on Ray: local, auto "
    "(the cluster this host joined) or ray://host:10001 [env RECSYS_RAY_ADDRESS; default: "
    "in-process].",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.version_option(package_name="recsys")
@click.pass_context
def cli(ctx: click.Context, database_url, artifacts_dir, device, ray_address, verbose) -> None:
    """Recommendations from a shop's own images, interactions and attributes.

    Typical flow: `recsys db upgrade`, `recsys ingest items ...`,
    `recsys ingest interactions ...`, `recsys stats`.
    """
    # a terminal gets short lines; a log file (cron, a pipeline) gets each line's time too
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s"
        if _is_terminal(sys.stderr)
        else "%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt=TEXT_TIME,
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("recsys").setLevel(logging.INFO)
    # PIL's chunk-by-chunk DEBUG lines ("STREAM b'IHDR' 16 13") were 10,512 of `-v train`'s
    # 10,583 lines
    logging.getLogger("PIL").setLevel(logging.INFO)
    # JSON from the first line when asked for: the settings' own warnings (a misspelt
    # RECSYS_ variable) came out as text ahead of the JSON lines
    _log_as(os.environ.get("RECSYS_LOG_FORMAT", "").strip().lower())
    flags = {
        "database_url": database_url,
        "artifacts_dir": artifacts_dir,
        "device": device,
        "ray_address": ray_address,
    }
    try:
        ctx.obj = Settings.load(**flags)
    except RecsysError as exc:
        setting = getattr(exc, "setting", None)
        if flags.get(setting) is not None:  # a flag's value, not RECSYS_<FIELD>'s
            exc = set_by(exc, "--" + setting.replace("_", "-"))
        raise click.UsageError(str(exc)) from exc
    _log_as(ctx.obj.log_format)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def _log_as(log_format: str) -> None:
    """JSON lines under ``RECSYS_LOG_FORMAT=json``; the text default keeps its short CLI
    lines."""
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter("json"))


# sysexits' EX_TEMPFAIL: a passing condition; the same command may work later
TRY_AGAIN = 75


def _terminate(_signal, _frame) -> None:
    raise Terminated()


def main() -> None:
    # SIGTERM takes Ctrl-C's path: its clean-ups run (temporary files, partial backups) and
    # what was kept is said; it stopped a job with nothing said and its leftovers kept
    signal.signal(signal.SIGTERM, _terminate)
    try:
        # NO_COLOR (no-color.org): no ANSI colour in the error lines, on a terminal too
        cli(prog_name="recsys", color=False if os.environ.get("NO_COLOR") else None)
    finally:  # not in the exit's own clean-ups ("Exception ignored in atexit callback")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
