"""Shared fixtures: a migrated catalog on SQLite and, when available, PostgreSQL.

PostgreSQL tests run when RECSYS_TEST_POSTGRES_URL points at a server where the test user may
create databases (`make test` and `.ci/run` start a throwaway one); otherwise they are skipped.
"""

from __future__ import annotations

import os
import uuid

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from recsys.catalog import connect, migrate
from recsys.cli import cli

POSTGRES_URL = os.environ.get("RECSYS_TEST_POSTGRES_URL")


@pytest.fixture(scope="session", autouse=True)
def _rate_limit_counters_in_tmp(tmp_path_factory):
    """Each test catalog's rate-limit counters file goes to the session's tmp folder, not to
    /dev/shm, where one file per throwaway catalog URL piled up (2,900 files, 34 MB of RAM)."""
    from services import limits

    folder = tmp_path_factory.mktemp("ratelimits")

    def in_tmp(database_url: str) -> str:
        return f"sqlite://{folder / os.path.basename(limits_path(database_url))}"

    limits_path = limits.default_storage_uri
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(limits, "default_storage_uri", in_tmp)
        yield


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A URL of an empty database, one per test, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    if not POSTGRES_URL:
        if os.environ.get("RECSYS_REQUIRE_POSTGRES"):
            pytest.fail("RECSYS_REQUIRE_POSTGRES is set but RECSYS_TEST_POSTGRES_URL is not")
        pytest.skip("RECSYS_TEST_POSTGRES_URL not set (run `make test` to start a server)")
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def engine(db_url):
    """A migrated catalog database."""
    engine = connect(db_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def run_cli(db_url):
    """Invoke `recsys` in-process against the test database; returns the click Result."""
    runner = CliRunner()

    def run(*args: str, expect_exit: int | None = 0):
        result = runner.invoke(cli, ["--database-url", db_url, *map(str, args)])
        if expect_exit is not None and result.exit_code != expect_exit:
            raise AssertionError(
                f"`recsys {' '.join(map(str, args))}` exited {result.exit_code}, "
                f"expected {expect_exit}:\n{result.output}",
            ) from result.exception
        return result

    return run
