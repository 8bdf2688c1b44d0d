"""Does near-duplicate search find re-listed items? Plants re-listings in a copy of a catalog.

Copies a SQLite catalog (the source is never written), lists ``--relist`` of its items with
events again (a new id ``relisted-<id>``, the same title, attributes and photo, no events: a
seller's second listing of one product; ``--title-suffix`` adds words to the copy's title),
trains a bundle at `recsys train`'s defaults, and scores the spaces near-duplicate search
could read, side by side: the fused item vectors (what `recsys catalog duplicates` and the
admin endpoint read before session 45), ``FusedModel.listing_vectors`` (what they read
since), and those with each pair's score capped by the share of the shorter title's words
the other has (``duplicates.title_checked``: what they do now where no photo verifies a
pair). For each: the score of each re-listing with its source, for how many the source is
the nearest item by vector, and at each ``--threshold`` how many re-listings meet their
source and how many other pairs reach it.

    .venv/bin/python scripts/relisted_duplicates.py --source DEMO/catalog.db --workdir /tmp/relist
    .venv/bin/python scripts/relisted_duplicates.py --workdir /tmp/relist --existing   # score again

``--existing`` scores a workdir an earlier run planted and trained, as it is (another
version of the code on the same bundle); ``--show N`` lists the N best other pairs the
titles' check keeps, with their titles.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recsys.catalog import connect
from recsys.catalog.models import Interaction, Item
from recsys.catalog.reads import item_titles
from recsys.catalog_intel.duplicates import title_checked
from recsys.catalog_intel.neighbours import as_unit_vectors, pairs_above
from recsys.model.bundle import load_active
from recsys.model.training import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="a SQLite catalog file (not --existing)")
    parser.add_argument(
        "--workdir", type=Path, required=True, help="replaced whole (read as it is: --existing)"
    )
    parser.add_argument("--relist", type=int, default=50, help="items listed again")
    parser.add_argument("--min-events", type=int, default=5, help="of each relisted item")
    parser.add_argument("--threshold", type=float, nargs="+", default=[0.95, 0.99])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--title-suffix", default="", help="added to each copy's title, e.g. ' - new'"
    )
    parser.add_argument("--existing", action="store_true", help="the workdir as it is")
    parser.add_argument("--show", type=int, default=0, help="other pairs listed, best first")
    args = parser.parse_args()
    if args.existing:
        engine = connect(f"sqlite:///{args.workdir / 'c.db'}")
        pairs = planted(engine)
    elif args.source is None:
        parser.error("--source is needed unless --existing")
    else:
        engine = copied_catalog(args.source, args.workdir)
        pairs = relist(engine, args.relist, args.min_events, args.seed, args.title_suffix)
        train(engine, args.workdir / "artifacts", device="cpu")
    recommender = load_active(engine)
    fused = recommender.fused
    titles = item_titles(engine, recommender.item_ids.tolist())
    sources = recommender.item_rows([source for source, _ in pairs])
    copies = recommender.item_rows([copy for _, copy in pairs])
    listing = fused.listing_vectors()
    report = {
        "fused item vectors": scored(fused.item_vectors_, sources, copies, args.threshold),
        "listing vectors": scored(listing, sources, copies, args.threshold),
        "listing vectors, titles checked": scored(listing, sources, copies, args.threshold, titles),
    }
    if args.show:
        report["other pairs kept by the titles' check, best first"] = others(
            listing, titles, copies, min(args.threshold), args.show
        )
    print(json.dumps({"relisted": len(pairs), **report}, indent=1))


def planted(engine) -> list[tuple[str, str]]:
    """(source, copy) of the re-listings an earlier run planted in this catalog."""
    with Session(engine) as session:
        copies = session.scalars(
            select(Item.external_id).where(Item.external_id.like("relisted-%"))
        ).all()
    return [(copy.removeprefix("relisted-"), copy) for copy in sorted(copies)]


def others(vectors, titles, copies, threshold: float, n: int) -> list:
    """The ``n`` best pairs at ``threshold`` or above, titles checked, that are not a planted
    re-listing: [score, title, title]."""
    left, right, score = pairs_above(as_unit_vectors(vectors), threshold)
    left, right, score = title_checked(titles, left, right, score, threshold)
    keep = ~(np.isin(left, copies) | np.isin(right, copies))
    order = np.argsort(-score[keep], kind="stable")[:n]
    left, right, score = left[keep][order], right[keep][order], score[keep][order]
    return [
        [round(float(s), 4), titles[a], titles[b]]
        for a, b, s in zip(left.tolist(), right.tolist(), score.tolist(), strict=True)
    ]


def copied_catalog(source: Path, workdir: Path):
    """An engine on a copy of the SQLite catalog ``source`` in ``workdir`` (replaced whole)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    with sqlite3.connect(source) as src, sqlite3.connect(workdir / "c.db") as dst:
        src.backup(dst)
    return connect(f"sqlite:///{workdir / 'c.db'}")


def relist(engine, n: int, min_events: int, seed: int, suffix: str) -> list[tuple[str, str]]:
    """List ``n`` seeded items with at least ``min_events`` events again, ``suffix`` added to
    their titles -> (source, copy)."""
    with Session(engine) as session, session.begin():
        counted = (
            select(Interaction.item_id)
            .group_by(Interaction.item_id)
            .having(func.count() >= min_events)
        )
        rows = np.sort(np.array(session.scalars(counted).all()))
        picked = np.random.default_rng(seed).choice(rows, min(n, len(rows)), replace=False)
        pairs = []
        for item in session.scalars(select(Item).where(Item.id.in_(picked.tolist()))):
            copy = f"relisted-{item.external_id}"
            session.add(
                Item(
                    external_id=copy,
                    title=f"{item.title or ''}{suffix}" if suffix else item.title,
                    attributes=dict(item.attributes or {}),
                    image_path=item.image_path,
                    in_stock=True,
                )
            )
            pairs.append((item.external_id, copy))
    return pairs


def scored(vectors, sources, copies, thresholds: list[float], titles=None) -> dict:
    """How ``vectors`` (``titles``: and the titles' check of the pairs, ``title_checked``)
    pair each copy with its source, and how many other pairs reach each threshold."""
    unit = as_unit_vectors(vectors)
    pair = np.einsum("nd,nd->n", unit[sources], unit[copies])
    left, right, score = pairs_above(unit, min(thresholds))
    if titles is not None:
        pair = title_checked(titles, sources, copies, pair, -np.inf)[2]
        left, right, score = title_checked(titles, left, right, score, min(thresholds))
    others = unit[copies] @ unit.T  # (copies, items): each copy's best other item by vector
    others[np.arange(len(copies)), copies] = -2.0
    nearest = int((others.max(axis=1) <= pair + 1e-6).sum())
    out = {
        "source score, median": round(float(np.median(pair)), 4),
        "source score, min": round(float(pair.min()), 4),
        "source is the nearest item": nearest,
    }
    for threshold in thresholds:
        met = int((pair >= threshold).sum())
        out[f"at >= {threshold}: re-listings, other pairs"] = [
            met,
            int((score >= threshold).sum()) - met,
        ]
    return out


if __name__ == "__main__":
    main()
