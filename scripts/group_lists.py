"""How much of each list one product's variants take, without and with ``group_by``: for a
seeded sample of items and users of a catalog with an active bundle, the share of similar
items (both modes) and search-by-photo results of the asked item's own group, and the
distinct groups per list and the largest group's places in feeds.

    .venv/bin/python scripts/group_lists.py --database-url sqlite:///var/shop.db --group-by style
"""

from __future__ import annotations

import time

import click
import numpy as np

from recsys.catalog.db import connect_current
from recsys.serving import FeedRequest, home_feed, load_state


@click.command()
@click.option("--database-url", required=True, help="Catalog with an active bundle.")
@click.option("--group-by", required=True, help="The attribute naming each item's product.")
@click.option("-k", "k", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--items", type=click.IntRange(1), default=200, show_default=True)
@click.option("--users", type=click.IntRange(1), default=200, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def main(database_url: str, group_by: str, k: int, items: int, users: int, seed: int) -> None:
    """Print one line per surface and grouping: own-group share, distinct groups, top group."""
    engine = connect_current(database_url)
    state = load_state(engine, warm=False)
    recommender = state.recommender
    recommender.check_group_by(group_by)
    rng = np.random.default_rng(seed)
    asked = rng.choice(recommender.item_ids, min(items, len(recommender.item_ids)), False)
    known = recommender.cf.user_ids_ if recommender.cf is not None else np.zeros(0, dtype=str)
    people = rng.choice(known, min(users, len(known)), False)
    own = recommender._groups_of(asked.tolist(), group_by)

    def measure(lists, mine=None) -> str:
        groups = [recommender._groups_of(ids, group_by) for ids in lists]
        shares = [
            np.mean([g == m for g in listed]) if listed and m is not None else 0.0
            for listed, m in zip(groups, mine or [None] * len(groups), strict=True)
        ]
        distinct = [len(set(listed)) for listed in groups]
        top = [max(listed.count(g) for g in set(listed)) if listed else 0 for listed in groups]
        return (
            f"own group {np.mean(shares):.3f}, distinct groups {np.mean(distinct):.2f}, "
            f"top group's places {np.mean(top):.2f}"
        )

    for name in (None, group_by):
        label = f"group_by={name or ''}"
        for mode in ("similar", "also"):
            started = time.perf_counter()
            found = [
                recommender.similar_items([item], k=k, mode=mode, group_by=name).ids[0]
                for item in asked.tolist()
            ]
            ms = (time.perf_counter() - started) * 1000 / len(asked)
            click.echo(f"{label:<16} similar ({mode}): {measure(found, own)}, {ms:.1f} ms each")
        request = FeedRequest(k=k, group_by=name)
        started = time.perf_counter()
        feeds = [home_feed(state, engine, str(user), request).ids[0] for user in people]
        ms = (time.perf_counter() - started) * 1000 / len(people)
        click.echo(f"{label:<16} feeds: {measure(feeds)}, {ms:.1f} ms each")


if __name__ == "__main__":
    main()
