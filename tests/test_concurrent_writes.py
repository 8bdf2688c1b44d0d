"""Many writers at once: the first events of one new user, or one identical event, from 8
clients together each succeed and leave exactly one row (SQLite and PostgreSQL, the library
and the HTTP API); a write that lost a race is run again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

import recsys.ingest.interactions as interactions
from recsys.catalog import connect
from recsys.catalog.models import Interaction, Item, User
from recsys.ingest import IngestOptions, ingest_items
from recsys.ingest.bulk import settled_writes
from recsys.ingest.interactions import record_interactions
from recsys.model.data import read_interactions
from tests.shop_fixture import ADMIN, build_shop, service_app

CLIENTS = 8
ROUNDS = 5


def together(clients: int, call: Callable[[int], object]) -> tuple[list, list[BaseException]]:
    """``call(n)`` on ``clients`` threads released at once -> (results, errors)."""
    start = threading.Barrier(clients)
    results, errors = [None] * clients, []

    def run(n: int) -> None:
        start.wait()
        try:
            results[n] = call(n)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def count(engine, query) -> int:
    with Session(engine) as session:
        return session.scalar(query)


@pytest.fixture
def catalog(engine, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id\n" + "".join(f"i{n}\n" for n in range(CLIENTS)))
    ingest_items(engine, path, options=IngestOptions(show_progress=False))
    return engine


def test_first_events_of_one_new_user_from_many_clients(catalog):
    for round_ in range(ROUNDS):
        user = f"newcomer-{round_}"
        results, errors = together(
            CLIENTS,
            lambda n, user=user: record_interactions(
                catalog, [{"user_id": user, "item_id": f"i{n}"}]
            ),
        )
        assert errors == []
        assert all(result.inserted == 1 and result.users == [user] for result in results)
        assert count(catalog, select(func.count()).where(User.external_id == user)) == 1
    with Session(catalog) as session:
        per_user = session.execute(
            select(User.external_id, func.count(Interaction.id))
            .join(Interaction, Interaction.user_id == User.id)
            .group_by(User.external_id)
        ).all()
    assert sorted(per_user) == [(f"newcomer-{r}", CLIENTS) for r in range(ROUNDS)]


def test_one_identical_event_from_many_clients(catalog):
    for round_ in range(ROUNDS):
        event = {"user_id": "same", "item_id": "i0", "timestamp": f"2024-02-01T00:00:0{round_}"}
        results, errors = together(
            CLIENTS, lambda _n, event=event: record_interactions(catalog, [event])
        )
        assert errors == []
        assert sorted((r.inserted, r.unchanged) for r in results) == [(0, 1)] * (CLIENTS - 1) + [
            (1, 0)
        ]
    assert count(catalog, select(func.count(Interaction.id))) == ROUNDS
    assert count(catalog, select(func.count(User.id))) == 1


def test_items_ingested_by_two_writers_at_once_are_one_row_each(engine, tmp_path):
    paths = []
    for n in range(2):
        path = tmp_path / f"items{n}.csv"
        path.write_text("item_id,title,colour\n" + "".join(f"x{k},T{k},red\n" for k in range(50)))
        paths.append(path)
    options = IngestOptions(show_progress=False, batch_size=7)

    _, errors = together(2, lambda n: ingest_items(engine, paths[n], options=options))

    assert errors == []
    assert count(engine, select(func.count(Item.id))) == 50


def test_a_write_that_lost_a_race_is_run_again(catalog, monkeypatch):
    real, calls = interactions.upsert_interactions, []

    def busy_once(connection, rows):
        calls.append(rows.num_rows)
        if len(calls) == 1:
            raise OperationalError("INSERT ...", {}, Exception("database is locked"))
        return real(connection, rows)

    monkeypatch.setattr(interactions, "upsert_interactions", busy_once)
    recorded = record_interactions(catalog, [{"user_id": "late", "item_id": "i1"}])

    assert recorded.inserted == 1 and calls == [1, 1]
    assert count(catalog, select(func.count(Interaction.id))) == 1


def test_other_database_errors_are_not_retried(catalog, monkeypatch):
    calls = []

    def broken(connection, rows):
        calls.append(1)
        raise OperationalError("INSERT ...", {}, Exception("disk I/O error"))

    monkeypatch.setattr(interactions, "upsert_interactions", broken)
    with pytest.raises(OperationalError, match="disk I/O error"):
        record_interactions(catalog, [{"user_id": "late", "item_id": "i1"}])
    assert calls == [1]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return build_shop(tmp_path_factory.mktemp("shop"))


def test_http_clients_all_get_201_and_one_row(shop):
    app = service_app(shop, write_rate_limit="1000/second")
    headers = ADMIN

    def post(events):
        def call(_n):
            with app.test_client() as client:
                return client.post("/v1/interactions", json={"events": events}, headers=headers)

        return call

    # Without a timestamp each request's event is stamped when stored: 8 views, one user.
    new_user = [{"user_id": "http-newcomer", "item_id": "a1", "event": "view"}]
    same = [{"user_id": "http-same", "item_id": "a2", "timestamp": "2024-02-01T00:00:00Z"}]
    for events, inserted in ((new_user, CLIENTS), (same, 1)):
        responses, errors = together(CLIENTS, post(events))
        assert errors == []
        assert [r.status_code for r in responses] == [201] * CLIENTS
        assert sum(r.get_json()["inserted"] for r in responses) == inserted
    engine = connect(shop[0])
    for user, events in (("http-newcomer", CLIENTS), ("http-same", 1)):
        assert count(engine, select(func.count(User.id)).where(User.external_id == user)) == 1
        query = select(func.count(Interaction.id)).join(User).where(User.external_id == user)
        assert count(engine, query) == events
    engine.dispose()


def test_a_training_read_meets_every_event_in_the_bundle_or_in_the_fresh_ones(catalog, monkeypatch):
    """A batch stamped before a training's read and committed after it was in neither the
    bundle nor the events feeds fold in (stored after the read's time) until the next
    training: the read's time is now taken once the writes under way have committed."""
    real, staged = interactions.upsert_interactions, threading.Event()

    def slow(connection, rows):  # stamped; the commit comes a moment later
        staged.set()
        time.sleep(0.5)
        return real(connection, rows)

    monkeypatch.setattr(interactions, "upsert_interactions", slow)
    writer = threading.Thread(
        target=record_interactions, args=(catalog, [{"user_id": "u", "item_id": "i1"}])
    )
    writer.start()
    assert staged.wait(10)
    moment = settled_writes(catalog)
    read = read_interactions(catalog, stored_by=moment)
    writer.join()
    fresh = count(
        catalog, select(func.count(Interaction.id)).where(Interaction.created_at > moment)
    )
    assert len(read) + fresh == 1


def test_event_writes_go_on_while_a_training_waits_for_those_under_way(catalog, monkeypatch):
    """PostgreSQL: the training's wait took the writers' lock alone, and every HTTP event
    write queued behind it (one was a 503 after 15 s). SQLite's writers take turns anyway."""
    if catalog.dialect.name != "postgresql":
        pytest.skip("SQLite's writers take turns: the next write waits for the one under way")
    real, staged = interactions.upsert_interactions, threading.Event()
    finished = []

    def slow(connection, rows):
        if rows.num_rows == 2:  # the long write
            staged.set()
            time.sleep(1.5)
        return real(connection, rows)

    def write(name: str, events: list) -> None:
        record_interactions(catalog, events)
        finished.append(name)

    monkeypatch.setattr(interactions, "upsert_interactions", slow)
    long = [{"user_id": "u", "item_id": "i1"}, {"user_id": "u", "item_id": "i2"}]
    writer = threading.Thread(target=write, args=("long", long))
    writer.start()
    assert staged.wait(10)
    training = threading.Thread(target=settled_writes, args=(catalog,))
    training.start()
    time.sleep(0.2)  # the training is waiting for the long write
    write("short", [{"user_id": "v", "item_id": "i3"}])
    training.join()
    writer.join()
    assert finished == ["short", "long"]
