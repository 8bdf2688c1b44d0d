"""Schemathesis against every documented operation with many cases each (the CI test runs 40).

    python scripts/fuzz_service.py [--examples 1000]

Runs tests/test_service_fuzz.py (the admin key on every request, so guarded operations are
fuzzed past the credentials check) with RECSYS_FUZZ_EXAMPLES cases per operation; every
response must be a non-5xx that matches /openapi.json. Prints pytest's summary and the run
time, and exits with pytest's status.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent


@click.command(help=__doc__.split("\n\n")[0])
@click.option(
    "--examples",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Cases per operation.",
)
def main(examples: int) -> None:
    env = {**os.environ, "RECSYS_FUZZ_EXAMPLES": str(examples)}
    started = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["tests/test_service_fuzz.py", "-rA"]
    result = subprocess.run(command, cwd=ROOT, env=env)
    print(f"{examples} cases per operation, {time.perf_counter() - started:.0f} s")
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
