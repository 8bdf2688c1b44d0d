"""Offline evaluation, the same as `recsys evaluate` (see `recsys evaluate --help`).

    .venv/bin/python scripts/evaluate.py [--database-url URL] [--split temporal] [--k 5,10]

The catalog's options (--database-url, --artifacts-dir, --device, -v) may come anywhere.
"""

from __future__ import annotations

import sys

from recsys.cli import cli

GLOBAL_OPTIONS = ("--database-url", "--artifacts-dir", "--device")
GLOBAL_FLAGS = ("-v", "--verbose")


def arguments(argv: list[str]) -> list[str]:
    """``recsys`` arguments: the catalog's options first, then ``evaluate`` and the rest."""
    head, tail = [], []
    args = iter(argv)
    for arg in args:
        if arg.split("=", 1)[0] in GLOBAL_OPTIONS:
            head += [arg] if "=" in arg else [arg, next(args, "")]
        elif arg in GLOBAL_FLAGS:
            head.append(arg)
        else:
            tail.append(arg)
    return [*head, "evaluate", *tail]


if __name__ == "__main__":
    cli.main(args=arguments(sys.argv[1:]), prog_name="scripts/evaluate.py")
