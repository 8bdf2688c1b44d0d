"""The README's demo path on the real MovieLens data: prepare, ingest, stats."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from recsys.cli import cli


@pytest.mark.slow
def test_prepare_ingest_stats_gives_the_real_counts(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    data = tmp_path / "movielens"

    def recsys(*args: str) -> str:
        result = CliRunner().invoke(cli, ["--database-url", url, *args])
        assert result.exit_code == 0, result.output
        return result.output

    recsys("db", "upgrade")
    recsys("datasets", "prepare", "movielens", "--out", str(data))
    recsys("ingest", "items", str(data / "items.csv"), "-q")
    recsys("ingest", "interactions", str(data / "interactions.csv"), "-q")
    stats = json.loads(recsys("stats", "--json"))

    assert (stats["items"], stats["users"], stats["interactions"]) == (9066, 671, 100004)
    assert stats["events"] == {"rating": 100004}
    assert stats["attributes"] == {"genres": "multi", "year": "numeric"}
