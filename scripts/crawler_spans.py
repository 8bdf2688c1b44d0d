"""How far the crawler guard is from each catalog's shoppers: per catalog, the most items one
user's events span, against the limit ``TrainConfig.crawler_share`` and ``crawler_min_items``
set, and the users that training would leave out (``recsys.model.data.without_crawlers``).

    .venv/bin/python scripts/crawler_spans.py sqlite:///var/recsys.db sqlite:///var/shop.db
"""

from __future__ import annotations

import click

from recsys.catalog.db import connect_current
from recsys.model.config import TrainConfig
from recsys.model.data import read_catalog, without_crawlers


@click.command()
@click.argument("database_urls", nargs=-1, required=True)
def main(database_urls: tuple[str, ...]) -> None:
    """Print, per catalog: items, events, the most items one user spans, the limit, crawlers."""
    config = TrainConfig()
    for url in database_urls:
        data = read_catalog(connect_current(url))
        spans = data.interactions.groupby("user_id", observed=True)["item_id"].nunique()
        limit = max(config.crawler_min_items, config.crawler_share * len(data.items))
        _, crawlers = without_crawlers(data, config.crawler_share, config.crawler_min_items)
        click.echo(
            f"{url}: {len(data.items):,} items, {len(data.interactions):,} events; the most "
            f"items one user spans {int(spans.max()) if len(spans) else 0:,} "
            f"({spans.max() / len(data.items):.0%}); limit {limit:,.0f}; crawlers "
            f"{len(crawlers)}"
        )


if __name__ == "__main__":
    main()
