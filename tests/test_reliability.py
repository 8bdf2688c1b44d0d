"""Faults an operator meets: the catalog file moved away while serving, and `recsys train`
killed (SIGKILL) at each of its stages. Longer attacks: scripts/attack.py."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, text
from sqlalchemy import select as sql_select
from sqlalchemy.orm import Session

from recsys.catalog import connect, migrate
from recsys.catalog.db import creating, require_current_schema
from recsys.catalog.models import Interaction
from recsys.errors import CatalogNotReady, InvalidSettings
from recsys.model.bundle import UNREGISTERED, active_version
from recsys.model.training import STAGES, train
from recsys.settings import Settings
from services.app import create_app
from tests.shop_fixture import populate, train_config

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "reliability-admin-token-0123456789"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A trained toy shop on SQLite (no images: training needs no torch) -> (URL, artifacts)."""
    root = tmp_path_factory.mktemp("shop")
    url = f"sqlite:///{root / 'shop.db'}"
    engine = connect(url)
    migrate.upgrade(engine)
    populate(engine)
    train(engine, root / "artifacts", train_config(), "cpu")
    engine.dispose()
    return url, root / "artifacts"


def stored_events(path: Path) -> int:
    engine = connect(f"sqlite:///{path}")
    with Session(engine) as session:
        count = session.scalar(sql_select(func.count()).select_from(Interaction))
    engine.dispose()
    return count


# -- the catalog file moved away while serving -----------------------------------------------
def test_readyz_says_503_while_the_catalog_file_is_gone_and_ready_once_it_is_back(shop, caplog):
    url, artifacts = shop
    settings = Settings(database_url=url, artifacts_dir=artifacts, admin_token=TOKEN)
    client = create_app(settings, {"RELOAD_CHECK_SECONDS": 0}).test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    path = Path(url.removeprefix("sqlite:///"))
    before = stored_events(path)

    def post(user: str):
        event = {"user_id": user, "item_id": "a1", "event": "view"}
        return client.post("/v1/interactions", json={"events": [event]}, headers=auth)

    assert client.get("/readyz").status_code == 200
    assert post("moved-1").status_code == 201
    path.rename(path.with_suffix(".moved"))  # its -wal and -shm files stay behind
    try:
        gone = client.get("/readyz")
        assert gone.status_code == 503
        assert gone.get_json()["error"]["code"] == "database_unavailable"
        assert str(path.parent) not in gone.get_data(as_text=True)
        refused = post("moved-2")
        assert refused.status_code == 503  # not a 201 for a write to a file now elsewhere
        # a client is told when to retry (a 503 said nothing of it)
        assert int(gone.headers["Retry-After"]) > 0 and int(refused.headers["Retry-After"]) > 0
        assert not path.exists()  # no empty catalog created in its place
        for _ in range(20):
            assert client.get("/readyz").status_code == 503
        gone_lines = [r for r in caplog.records if "not creating an empty" in r.getMessage()]
        assert len(gone_lines) == 1  # said once, not once per connection tried
    finally:
        path.with_suffix(".moved").rename(path)
    assert client.get("/readyz").status_code == 200
    assert post("moved-3").status_code == 201
    assert stored_events(path) == before + 2  # every 201 stored, the refused event not
    restarted = create_app(settings, {"RELOAD_CHECK_SECONDS": 0}).test_client()
    assert restarted.get("/readyz").status_code == 200


def test_pages_and_feeds_shown_before_an_outage_are_answered_through_it(shop, tmp_path):
    """With the catalog database away, product pages went on only until the follower's
    10 s were up, and every feed was a 503 from the first second (it reads the events stored
    since the bundle), though the model and the item cards were in memory."""
    url, artifacts = shop
    copy = tmp_path / "shop.db"
    with sqlite3.connect(url.removeprefix("sqlite:///")) as source, sqlite3.connect(copy) as to:
        source.backup(to)
    settings = Settings(database_url=f"sqlite:///{copy}", artifacts_dir=artifacts)
    app = create_app(settings, {"RELOAD_CHECK_SECONDS": 0, "LIVE_CATALOG_SECONDS": 0})
    app.extensions["recsys"].cards.stale_after = 0  # as if the follower's 10 s were up
    client = app.test_client()
    pages = ("/v1/items/a1/similar?k=3", "/v1/users/u1/recommendations?k=3")
    before = [client.get(page).get_json() for page in pages]
    copy.rename(copy.with_suffix(".moved"))
    try:
        assert client.get("/readyz").status_code == 503  # it is still told
        during = [client.get(page) for page in pages]
        assert [answer.status_code for answer in during] == [200, 200]
        assert [answer.get_json() for answer in during] == before
        never_shown = client.get("/v1/items/b4/similar?k=30")  # cards it never read
        assert never_shown.status_code == 503
    finally:
        copy.with_suffix(".moved").rename(copy)
    assert client.get("/readyz").status_code == 200


def test_items_written_since_the_card_snapshot_are_answered_through_an_outage(shop, tmp_path):
    """An item written after the worker's card snapshot was read from the catalog on every
    request, so with the catalog away its page, and every feed or similar-items row listing
    it, was a 503 for the whole outage (after a bulk price update: every updated item)."""
    url, artifacts = shop
    copy = tmp_path / "shop.db"
    with sqlite3.connect(url.removeprefix("sqlite:///")) as source, sqlite3.connect(copy) as to:
        source.backup(to)
    settings = Settings(
        database_url=f"sqlite:///{copy}", artifacts_dir=artifacts, admin_token=TOKEN
    )
    app = create_app(settings, {"RELOAD_CHECK_SECONDS": 0, "LIVE_CATALOG_SECONDS": 0})
    cards = app.extensions["recsys"].cards
    cards.follow()
    assert cards.wait_for_snapshot(30)
    client = app.test_client()
    before = client.get("/v1/items/a1").get_json()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    patch = {"attributes": {"year": 2001}}
    assert client.patch("/v1/items/a1", json=patch, headers=headers).status_code == 200
    cards.follow()  # a1 is now read from the catalog, not the snapshot
    copy.rename(copy.with_suffix(".moved"))
    try:
        page = client.get("/v1/items/a1")
        assert page.status_code == 200 and page.get_json()["title"] == before["title"]
        assert client.get("/v1/items/a2/similar?k=5").status_code == 200
    finally:
        copy.with_suffix(".moved").rename(copy)


def test_a_new_process_never_creates_an_empty_catalog_beside_a_left_behind_wal(tmp_path):
    path = tmp_path / "catalog.db"
    engine = connect(f"sqlite:///{path}")
    migrate.upgrade(engine)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL: durable
        path.rename(tmp_path / "elsewhere.db")  # while a connection holds the WAL open
        fresh = connect(f"sqlite:///{path}")  # a worker started now
        with pytest.raises(CatalogNotReady, match="gone"):
            require_current_schema(fresh)
        assert not path.exists()


def test_a_catalog_file_replaced_by_another_is_followed_not_the_old_handle(tmp_path):
    path, other = tmp_path / "catalog.db", tmp_path / "restored.db"
    for target, n in ((path, 1), (other, 2)):
        engine = connect(f"sqlite:///{target}")
        with creating(engine), engine.begin() as connection:  # as `recsys db upgrade` does
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
            connection.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
        if target == path:
            serving = engine
        else:
            engine.dispose()
    with serving.connect() as connection:
        assert connection.execute(text("SELECT x FROM t")).scalar() == 1
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    other.replace(path)  # a restore from a backup: a different file at the same path
    with serving.connect() as connection:
        assert connection.execute(text("SELECT x FROM t")).scalar() == 2


# -- recsys train killed at each stage -------------------------------------------------------
# One driver imports the training code once and forks a `train` per stage, each on its own
# catalog; a child stops inside its stage (after the step, or, for register, just before it)
# and says so with its pid; the test then SIGKILLs it.
DRIVER = """
import os, sys, time, traceback
from recsys.catalog import connect
from recsys.model import training
from recsys.model.cf import CFConfig

config = training.TrainConfig(cf=CFConfig(factors=8, regularization=0.5), validation_share=0.25)
STEPS = {"read": "read_catalog", "images": "image_block", "tabular": "tabular_block",
         "cf": "build_collaborative", "weights": "choose_weights", "fuse": "_fuse",
         "index": "_recommender", "bundle": "write_model_files", "register": "register_bundle"}
assert set(STEPS) == set(training.STAGES), "a new stage: add its step here"


def train_stopping_in(stage, root):
    step = getattr(training, STEPS[stage])

    def stop():
        # one write of under PIPE_BUF bytes: the children's lines never interleave
        os.write(1, f"stopped in {stage} {os.getpid()}\\n".encode())
        time.sleep(600)

    def paused(*args, **kwargs):
        if stage == "register":
            stop()
        result = step(*args, **kwargs)
        stop()
        return result

    setattr(training, STEPS[stage], paused)
    training.train(connect(f"sqlite:///{root}/{stage}.db"), f"{root}/{stage}", config, "cpu")


for stage in training.STAGES:
    if os.fork() == 0:
        try:
            train_stopping_in(stage, sys.argv[1])
        except BaseException:
            traceback.print_exc()
        os.write(1, f"failed in {stage} {os.getpid()}\\n".encode())
        os._exit(1)
for _ in training.STAGES:
    os.wait()
"""


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """One catalog per stage (copies of one populated file) and a `train` on each killed with
    SIGKILL in that stage -> {stage: (URL, artifacts)}."""
    root = tmp_path_factory.mktemp("killed")
    template = root / "template.db"
    engine = connect(f"sqlite:///{template}")
    migrate.upgrade(engine)
    populate(engine)
    engine.dispose()  # the last connection checkpoints the WAL into the file
    for stage in STAGES:
        shutil.copy(template, root / f"{stage}.db")
    log = root / "driver.log"
    with log.open("w") as stderr:
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(root)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
    stopped = {}
    waiting = selectors.DefaultSelector()  # select.select refuses descriptors past 1023
    waiting.register(driver.stdout, selectors.EVENT_READ)
    try:
        while len(stopped) < len(STAGES):
            ready = waiting.select(180)
            words = (driver.stdout.readline() if ready else "").split()
            assert words[:2] == ["stopped", "in"], log.read_text()[-3000:]
            stopped[words[2]] = int(words[3])
    finally:
        waiting.close()
        for pid in stopped.values():
            os.kill(pid, signal.SIGKILL)
        driver.kill()
        driver.wait()
        driver.stdout.close()
    return {stage: (f"sqlite:///{root / stage}.db", root / stage) for stage in STAGES}


@pytest.mark.parametrize("stage", STAGES)
def test_train_killed_in_any_stage_leaves_nothing_the_next_run_does_not_remove(killed, stage):
    url, artifacts = killed[stage]
    engine = connect(url)
    assert active_version(engine) is None  # nothing half-registered
    bundles = artifacts / "bundles"
    left = {p.name for p in bundles.iterdir()} if bundles.is_dir() else set()
    if stage == "bundle":  # the partial hidden folder the issue found
        assert any(name.startswith(".") for name in left)
    if stage == "register":  # complete, renamed into place, never registered
        assert any((bundles / name / UNREGISTERED).exists() for name in left)
    result = train(engine, artifacts, train_config(), "cpu")
    assert active_version(engine) == result.version
    assert {p.name for p in bundles.iterdir()} == {result.version}  # no orphan, nothing hidden
    assert not (result.path / UNREGISTERED).exists()
    engine.dispose()


def test_a_catalog_file_truncated_under_the_service_is_a_503_and_not_ready(shop, tmp_path):
    """Truncated in place (a restore gone wrong): /readyz said ready (SELECT 1 still
    answered) while catalog reads and every write were 500s ("database disk image is
    malformed")."""
    import sqlite3

    url, artifacts = shop
    copy = tmp_path / "shop.db"
    with sqlite3.connect(url.removeprefix("sqlite:///")) as source, sqlite3.connect(copy) as to:
        source.backup(to)
    settings = Settings(database_url=f"sqlite:///{copy}", artifacts_dir=artifacts)
    config = {"RELOAD_CHECK_SECONDS": 0, "LIVE_CATALOG_SECONDS": 0}  # no follower thread
    client = create_app(settings, config).test_client()
    assert client.get("/readyz").status_code == 200
    assert client.get("/v1/items?limit=2").status_code == 200
    with open(copy, "r+b") as file:
        file.truncate(0)
    for path in ("/readyz", "/v1/items?limit=2", "/v1/users/u1/recommendations?k=2"):
        answer = client.get(path)
        assert answer.status_code == 503, (path, answer.get_json())
        assert answer.get_json()["error"]["code"] == "database_unavailable"


def test_the_cards_follower_logs_a_lasting_failure_once_not_every_pass(caplog):
    """With the catalog gone the follower logged a traceback every second in every worker
    (1,040 lines in 10 s with two workers)."""
    from recsys.serving import follow_catalog

    class Holder:
        ready = True

        def follow(self):
            return None

        def trim_after_swap(self):
            return False

    class Cards:
        calls = 0

        def follow(self):
            self.calls += 1
            if self.calls > 50:
                raise SystemExit  # ends the loop (not an Exception: never caught there)
            raise CatalogNotReady("the cards follower test's catalog is gone")

    with pytest.raises(SystemExit):
        follow_catalog(Holder(), 0.0, Cards())
    lines = [r for r in caplog.records if "follower test's catalog" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is not None


def test_a_locked_postgresql_table_is_a_503_within_the_database_timeout(engine, db_url, tmp_path):
    """The service set no statement or connect timeout: a 75 s lock on items held every
    request that read them (and, once every thread was held, /healthz) for 72 s."""
    if not db_url.startswith("postgresql"):
        pytest.skip("statement_timeout is PostgreSQL's; SQLite waits SQLITE_BUSY_SECONDS")
    populate(engine)
    train(engine, tmp_path, train_config())
    settings = Settings(database_url=db_url, artifacts_dir=tmp_path, database_timeout=1)
    client = create_app(settings, {"RELOAD_CHECK_SECONDS": 0}).test_client()
    assert client.get("/v1/items?limit=2").status_code == 200
    locker = connect(db_url)
    with locker.connect() as connection:
        connection.execute(text("BEGIN"))
        connection.execute(text("LOCK TABLE items IN ACCESS EXCLUSIVE MODE"))
        started = time.monotonic()
        held = client.get("/v1/items?limit=2")
        waited = time.monotonic() - started
        connection.execute(text("ROLLBACK"))
    locker.dispose()
    assert held.status_code == 503 and int(held.headers["Retry-After"]) > 0
    assert waited < 10  # the second the setting allows, and the error's way out
    assert client.get("/v1/items?limit=2").status_code == 200  # the pool's connection works


@pytest.mark.parametrize("pooler", ["", "session", "transaction"])
def test_behind_pgbouncer_the_timeout_and_prepared_statements_fit_its_pool_mode(db_url, pooler):
    """Behind PgBouncer the service could not connect at all (it refuses the statement
    timeout as a startup option), and in transaction pooling psycopg's prepared statements
    broke item writes ("prepared statement _pg3_N already exists"). ``?pgbouncer=session``
    sets the timeout on each new connection; ``=transaction`` prepares nothing and leaves
    the timeout to the role (a session setting would stay on a shared server connection)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PgBouncer pools PostgreSQL connections")
    url = f"{db_url}?pgbouncer={pooler}" if pooler else db_url
    engine = connect(url, timeout=15)
    with engine.connect() as connection:
        shown = connection.exec_driver_sql("SHOW statement_timeout").scalar()
        prepared = connection.connection.driver_connection.prepare_threshold
    engine.dispose()
    assert shown == ("0" if pooler == "transaction" else "15s")
    assert (prepared is None) == (pooler == "transaction")
    with pytest.raises(InvalidSettings, match="pgbouncer='statement' is not one of"):
        connect(f"{db_url}?pgbouncer=statement")
