"""How long an ingest's duplicate check (``pipeline.SeenKeys``) takes over a large file.

    python scripts/bench_seen_keys.py [--batches 400] [--batch 50000]

Feeds --batches batches of --batch random 40-bit keys (a few repeats) to ``SeenKeys`` and,
side by side in the same run, to the same class with the plain lookup (unsorted needles),
twice each in turn; prints the seconds each took and the number of first occurrences, which
must agree.
"""

from __future__ import annotations

import time

import click
import numpy as np

from recsys.ingest.pipeline import SeenKeys


class PlainLookup(SeenKeys):
    """``SeenKeys`` searching its runs for the keys in their batch order."""

    def _contains(self, hashes: np.ndarray) -> np.ndarray:
        found = np.zeros(len(hashes), dtype=bool)
        for run in self._runs:
            positions = np.searchsorted(run, hashes).clip(max=len(run) - 1)
            found |= run[positions] == hashes
        return found


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--batches", default=400, show_default=True)
@click.option("--batch", default=50_000, show_default=True)
def main(batches: int, batch: int) -> None:
    for kind in (PlainLookup, SeenKeys, PlainLookup, SeenKeys):
        rng = np.random.default_rng(0)
        seen, seconds, first = kind(), 0.0, 0
        for _ in range(batches):
            keys = rng.integers(0, 2**40, size=batch, dtype=np.uint64)
            started = time.perf_counter()
            first += int(seen.first_occurrences(keys).sum())
            seconds += time.perf_counter() - started
        took = f"{batches} x {batch:,} keys in {seconds:.1f} s"
        click.echo(f"{kind.__name__}: {took}, {first:,} first occurrences")


if __name__ == "__main__":
    main()
