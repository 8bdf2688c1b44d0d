"""Click commands, one module per top-level `recsys` subcommand (thin: the work is in recsys/)."""

import logging
import math
import os
import sys
from pathlib import Path

import click


def bars(quiet: bool = False) -> bool:
    """Whether a command shows progress bars: not with --quiet, nor when stderr is no
    terminal (a log file held 30 frames of a redirected train's bar). --quiet also keeps the
    INFO lines back (warnings and errors still come): `train -q` wrote 25 of them, one a
    metrics dict of kilobytes."""
    if quiet and not logging.getLogger("recsys").isEnabledFor(logging.DEBUG):  # not with -v
        logging.getLogger("recsys").setLevel(logging.WARNING)
    return not quiet and sys.stderr.isatty()


# --progress/--no-progress of the commands whose work is long (images, catalog health).
progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    callback=lambda ctx, param, value: bars() if value is None else value,
    help="Show progress bars [default: when stderr is a terminal].",
)


class OutPath(click.Path):
    """A path a command will write (a folder, or with ``dir_okay=False`` a file), checked
    before any work: the nearest part of it that exists must be a folder this process can
    write in. (A file on the way, ``--out notes.txt/report``, was a traceback after the whole
    run.)"""

    def __init__(self, **options) -> None:
        options.setdefault("file_okay", False)
        super().__init__(path_type=Path, **options)

    def convert(self, value, param, ctx):
        path = super().convert(value, param, ctx)
        if path.exists():
            return path
        parent = next(p for p in path.absolute().parents if p.exists())
        if not parent.is_dir():
            self.fail(f"{parent} is a file: {path} cannot be made under it", param, ctx)
        if not os.access(parent, os.W_OK | os.X_OK):
            self.fail(f"{parent} is not writable: {path} cannot be made in it", param, ctx)
        return path


class Finite(click.FloatRange):
    """A float option's range without NaN or ±inf: click's range test lets "nan" through
    (each comparison with it is false), and `catalog duplicates --threshold nan` found
    nothing, exit 0, where the service answers 400; an unbounded range lets "inf" through,
    and `train --half-life-days inf` was a ValueError traceback from the model's config. No
    option of ours means "no bound" by inf (0 does, where one does)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number", param, ctx)
        if math.isinf(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number
