"""Side-by-side table of `recsys evaluate` reports: recall@10 and cold-item recall@10 of every
contender, per report (e.g. one per seed) and their mean, as Markdown; then, where the reports
have them, the fused model against its best parts (paired differences per user) and the
product-page rankers' next-item hit rate.

    .venv/bin/python scripts/contender_table.py reports/20261130T0*/ [--k 10]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from recsys.evaluation.parts import verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="report folders (metrics.json)")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    runs = [json.loads((path / "metrics.json").read_text()) for path in args.reports]
    seeds = " / ".join(f"S={run['config']['seed']}" for run in runs)
    print(f"| contender | recall@{args.k} ({seeds}, mean) | cold-item recall@{args.k} (same) |")
    print("| --- | --- | --- |")
    for name in runs[0]["contenders"]:
        cells = [_cell(runs, name, part, args.k) for part in ("overall", "cold_items")]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    _against_parts(runs, seeds)
    pages = [run.get("item_to_item", {}) for run in runs]
    if all(page.get("rankers") for page in pages):
        k = pages[0]["k"]
        pairs = " / ".join(str(page["pairs"]) for page in pages)
        print(f"\n| product-page ranker | next-item hit rate@{k} ({seeds}, mean; {pairs} pairs) |")
        print("| --- | --- |")
        for name in pages[0]["rankers"]:
            print(f"| {name} | {_series([p['rankers'][name][f'hit_rate@{k}'] for p in pages])} |")


def _against_parts(runs: list[dict], seeds: str) -> None:
    """The fused model against its best part, paired per user (``recsys evaluate``'s
    against_parts), per report and the mean difference, with the level rule on the mean."""
    sections = [run.get("against_parts") for run in runs]
    if not all(sections):
        return
    level, k = sections[0]["level"], sections[0]["k"]
    print(
        f"\n| fused against (per report) | difference ({seeds}, mean) | standard error | verdict |"
    )
    print("| --- | --- | --- | --- |")
    for key, label in (("warm", "recall"), ("cold", "cold-item recall")):
        found = [section[key] for section in sections]
        if not all(found):
            continue
        parts = " / ".join(dict.fromkeys(f["part"] for f in found))
        differences = [f["difference"] for f in found]
        mean = float(np.mean(differences))
        shown = " / ".join(f"{d:+.4f}" for d in differences)
        shown = shown if len(found) == 1 else f"{shown}, **{mean:+.4f}**"
        errors = " / ".join(f"{f['stderr']:.4f}" for f in found)
        judged = verdict(mean, level)
        print(f"| {label}@{k}: {parts} | {shown} | {errors} | {judged} (by the mean) |")


def _cell(runs: list[dict], name: str, part: str, k: int) -> str:
    values = [run["contenders"].get(name, {}).get(part, {}).get(f"recall@{k}") for run in runs]
    return "–" if any(v is None for v in values) else _series(values)


def _series(values: list[float]) -> str:
    """Each run's value, then their mean in bold when there are several."""
    shown = " / ".join(f"{v:.4f}" for v in values)
    return shown if len(values) == 1 else f"{shown}, **{np.mean(values):.4f}**"


if __name__ == "__main__":
    main()
