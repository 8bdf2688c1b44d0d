"""Log replay through the served path: a tiny split of the toy catalog, the service trained on
its training part and run on a free port, the held-out events replayed through it."""

from __future__ import annotations

import http.server
import json
import socket
import threading

import pandas as pd
import pytest
from click.testing import CliRunner
from sqlalchemy import delete
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from recsys.catalog import connect, migrate
from recsys.catalog.models import Interaction
from recsys.cli import cli
from recsys.errors import InvalidInput, TryAgain
from recsys.evaluation.replay import ReplayConfig, offline_feeds, read_events, replay
from recsys.model.bundle import load_active
from recsys.model.split import temporal_split
from recsys.model.training import train
from recsys.serving import FeedRequest, home_feed, load_state
from recsys.settings import Settings
from services.app import create_app
from tests.shop_fixture import ADMIN_TOKEN, populate, train_config
from tests.toy import toy_catalog

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(URL, database URL, artifacts, held-out events): the toy catalog minus each user's
    latest 30% of interactions, trained, served in a thread."""
    root = tmp_path_factory.mktemp("replay")
    url = f"sqlite:///{root / 'shop.db'}"
    engine = connect(url)
    migrate.upgrade(engine)
    populate(engine)
    interactions = toy_catalog().interactions
    _, held = temporal_split(interactions, 0.3)
    with Session(engine) as session, session.begin():
        keys = [f"k{k}" for k in held.index]
        session.execute(delete(Interaction).where(Interaction.dedup_key.in_(keys)))
    train(engine, root / "artifacts", train_config(), "cpu")
    settings = Settings(database_url=url, artifacts_dir=root / "artifacts", admin_token=ADMIN_TOKEN)
    app = create_app(settings, {"RELOAD_CHECK_SECONDS": 0})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    events = held.assign(timestamp=pd.to_datetime(held["timestamp"], utc=True))
    events = events.sort_values("timestamp", kind="stable").reset_index(drop=True)
    yield f"http://127.0.0.1:{server.server_port}", url, root / "artifacts", events
    server.shutdown()
    engine.dispose()


def test_replayed_feeds_agree_with_the_same_bundle_in_process(served):
    base, url, _, events = served
    section = replay(events, base, ReplayConfig(k=5, post=False))
    offline = offline_feeds(load_active(connect(url)), events, k=5, diversity=0.0)
    assert section["events"] == len(events) > 10
    assert section["model_version"] == offline["model_version"]
    assert section["feeds"]["feed"] == offline["feed"]
    assert section["feeds"]["feed_first"] == offline["feed_first"]
    # drama fans' held-out dramas are found: the figures are not those of a random list
    assert section["feeds"]["feed"]["hit_rate"] > 0.5


def test_the_commands_in_process_pass_answers_as_the_service_does(served):
    """Listing every item, the service leaves out the sold-out ones (its live catalog); the
    command's in-process pass read the bundle alone and listed them, so the two rows of its
    report differed on shop data."""
    from recsys.evaluation.replay import _offline

    base, url, _, events = served
    config = ReplayConfig(k=32, post=False)
    section = replay(events, base, config)
    offline = _offline(connect(url), events, section["model_version"], config)
    assert offline["feed"] == section["feeds"]["feed"]
    assert offline["feed_first"] == section["feeds"]["feed_first"]


def test_replay_scores_the_expected_hits_and_posting_folds_events_in(served):
    base, url, _, _ = served
    recommender = load_active(connect(url))
    top = recommender.recommend(["u12"], k=5).ids[0]
    similar = recommender.similar_items([top[0]], k=5).ids[0]
    events = pd.DataFrame(
        {
            "user_id": ["u12", "u12", "u12"],
            "item_id": [top[0], top[1], "a7"],  # ranks 1 and 2 of the feed; a comedy: none
            "event": "click",
            "weight": 1.0,
            "timestamp": pd.to_datetime(["2025-01-01", "2025-01-02", "2025-01-03"], utc=True),
        }
    )
    section = replay(events, base, ReplayConfig(k=5, post=True, api_key=ADMIN_TOKEN))
    feed = section["feeds"]["feed"]
    assert (feed["events"], feed["hit_rate"], feed["mrr"]) == (3, pytest.approx(2 / 3), 0.5)
    rank = similar.index(top[1]) + 1 if top[1] in similar else 0
    similar_scores = section["posting"]["similar"]
    assert similar_scores["events"] == 2  # the 2nd and 3rd events follow another of u12
    assert similar_scores["hit_rate"] == pytest.approx((rank > 0) / 2)
    # the posted events are stored and folded into u12's next feed (seen: not listed again)
    state = load_state(connect(url))
    fresh = home_feed(state, connect(url), "u12", FeedRequest(k=5)).ids[0]
    assert top[0] not in fresh and top[1] not in fresh


def test_a_key_that_cannot_post_is_refused_before_the_feeds_pass(served, monkeypatch):
    from recsys.evaluation import replay as replaying

    base, _, _, events = served
    asked = []

    def counted(*args, **kwargs):
        asked.append(args)
        return {"model_version": "m", "fallback_events": 0}

    monkeypatch.setattr(replaying, "_pass", counted)
    for key in (None, "not-a-key"):
        with pytest.raises(InvalidInput, match="events:write, or --no-post"):
            replay(events, base, ReplayConfig(k=5, post=True, api_key=key))
    assert asked == []  # no pass ran
    replay(events, base, ReplayConfig(k=5, post=True, api_key=ADMIN_TOKEN))
    assert len(asked) == 2  # a key that can post: both passes


def test_evaluate_replay_command_writes_the_report(served, tmp_path):
    base, url, artifacts, events = served
    path = tmp_path / "heldout.csv"
    events.head(12).to_csv(path, index=False)
    out = tmp_path / "reports"
    runner = CliRunner()
    args = ["--database-url", url, "--artifacts-dir", str(artifacts), "evaluate", "--replay"]
    args += ["--service", base, "--events", str(path), "--no-post", "--k", "5", "--out", str(out)]
    result = runner.invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = next(out.iterdir())
    metrics = json.loads((report / "metrics.json").read_text())["replay"]
    assert metrics["events"] == 12 and "posting" not in metrics
    assert metrics["offline"]["feed"] == metrics["feeds"]["feed"]  # same bundle in-process
    markdown = (report / "report.md").read_text()
    assert "Log replay through the served path" in markdown
    # a per-event rate, named and defined apart from the offline report's share of users
    assert "| next-event hit rate@5 |" in markdown and "## Definitions" in markdown
    assert "- next-event hit rate@5: the share of replayed events" in markdown
    assert "feed next-event hit rate@5" in result.output
    assert "replay (feeds)" not in result.output  # no bars into a redirected log


def test_events_files_keep_their_ids_as_written(tmp_path):
    """pandas' guesses read "00123" as user 123, "1e5" as 100000.0 and "NaN" as no id, so a
    split written by ``evaluate --write-split`` was not replayed as it was written."""
    path = tmp_path / "heldout.csv"
    path.write_text(
        "user_id,item_id,event,weight,timestamp\n"
        "00123,0042,view,1.0,2024-02-01 10:00:00\n"
        "1e5,NaN,,,2024-02-01 10:00:01\n"
        "null,None,view,,2024-02-01 10:00:02\n"
    )
    events = read_events(path)
    assert events["user_id"].tolist() == ["00123", "1e5", "null"]
    assert events["item_id"].tolist() == ["0042", "NaN", "None"]
    assert events["event"].isna().tolist() == [False, True, False]
    assert events["weight"].isna().tolist() == [False, True, True]

    path.write_text("user_id,item_id,timestamp\n00123,00123,1706781600\n")
    assert read_events(path)["timestamp"][0] == pd.Timestamp("2024-02-01 10:00:00Z")


def test_first_events_leave_out_a_pairs_later_events(served):
    _, url, _, _ = served
    recommender = load_active(connect(url))
    top = recommender.recommend(["u12"], k=5).ids[0]
    events = pd.DataFrame(
        {
            "user_id": ["u12"] * 3,
            "item_id": [top[1], "a7", top[1]],  # the third repeats the first (a view, a buy)
            "timestamp": pd.to_datetime(["2025-01-01", "2025-01-02", "2025-01-03"], utc=True),
        }
    )
    scores = offline_feeds(recommender, events, k=5, diversity=0.0)
    assert scores["feed"] == {"events": 3, "hit_rate": pytest.approx(2 / 3), "mrr": 1 / 3}
    assert scores["feed_first"] == {"events": 2, "hit_rate": 0.5, "mrr": 0.25}


def test_an_empty_events_file_is_refused_before_any_request(served, tmp_path):
    """A header alone was replayed to a report of "(model None)" and a KeyError, a 0-byte file
    was pandas' EmptyDataError: both exit 1."""
    base, url, artifacts, _ = served
    out = tmp_path / "reports"
    for name, text in (("empty.csv", ""), ("header.csv", "user_id,item_id,timestamp\n")):
        path = tmp_path / name
        path.write_text(text)
        args = ["--database-url", url, "--artifacts-dir", str(artifacts), "evaluate"]
        args += ["--replay", "--service", base, "--events", str(path), "--out", str(out)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert f"--events {path} holds no events" in result.output
        assert list(out.iterdir()) == []  # no report


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next (status, headers, body) of ``server.script``."""

    def do_GET(self):
        status, headers, body = self.server.script.pop(0)
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def waits(monkeypatch):
    """The seconds this thread's replay client waited (instead of waiting them); the served
    fixture's threads sleep as they would."""
    import time

    sleep, this, waited = time.sleep, threading.current_thread(), []

    def wait(seconds):
        waited.append(seconds) if threading.current_thread() is this else sleep(seconds)

    monkeypatch.setattr(time, "sleep", wait)
    return waited


@pytest.fixture
def scripted(waits):
    """(a server answering from its script, the waits the client slept)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, waits
    server.shutdown()


def test_a_proxys_error_pages_are_waited_out_with_backoff(scripted):
    """A proxy's 503 {"error": "injected"} was an AttributeError, its 502 HTML page a
    JSONDecodeError: the replay ended at once with its work lost."""
    from recsys.evaluation.replay import ServiceClient

    server, waits = scripted
    html = b"<html><body>502 Bad Gateway</body></html>"
    server.script = [
        (503, {"Content-Type": "application/json"}, b'{"error":"injected"}'),
        (502, {"Content-Type": "text/html"}, html),
        (503, {"Retry-After": "3"}, b""),
        (200, {}, b'{"model_version": "m", "items": []}'),
    ]
    client = ServiceClient(f"http://127.0.0.1:{server.server_port}")
    assert client.get("/v1/users/u1/recommendations") == {"model_version": "m", "items": []}
    assert waits == [0.5, 1.0, 3.0]  # doubling, then the answer's Retry-After

    server.script = [(502, {}, html)] * 6
    with pytest.raises(TryAgain, match="answered 502: <html><body>502 Bad Gateway</body></html>"):
        client.get("/v1/users/u1/recommendations")
    server.script = [(404, {}, html)]  # not a passing status: said at once, naming it
    with pytest.raises(InvalidInput, match="answered 404: <html>"):
        client.get("/v1/users/u1/recommendations")


def test_a_service_that_refuses_connections_is_tried_with_backoff(waits):
    """Three tries within the same second, then exit 2: a restarting service was given up on."""
    from recsys.evaluation import replay as replaying

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    client = replaying.ServiceClient(f"http://127.0.0.1:{port}")
    with pytest.raises(TryAgain, match=r"no answer from the service .*refused.*, 6 times"):
        client.get("/v1/users/u1/recommendations")
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_posting_goes_on_past_events_the_service_does_not_store(served, tmp_path):
    """An event of an item the service's catalog does not hold (removed since) stopped the
    posting pass with a 400, the earlier events posted and no report written."""
    base, url, artifacts, _ = served
    path = tmp_path / "heldout.csv"
    path.write_text(
        "user_id,item_id,timestamp\n"
        "u13,a1,2025-03-01T00:00:00Z\n"
        "u13,no-such-item,2025-03-02T00:00:00Z\n"
        "u13,a2,2025-03-03T00:00:00Z\n"
        "stranger,a2,2025-03-04T00:00:00Z\n"
    )
    out = tmp_path / "reports"
    args = ["--database-url", url, "--artifacts-dir", str(artifacts), "evaluate", "--replay"]
    args += ["--service", base, "--events", str(path), "--api-key", ADMIN_TOKEN]
    result = CliRunner().invoke(cli, [*args, "--k", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = next(out.iterdir())
    posting = json.loads((report / "metrics.json").read_text())["replay"]["posting"]
    assert posting["feed"]["events"] == 4 and posting["rejected"] == {"unknown_item": 1}
    # scored with nothing said: events of users and of items the served bundle does not know
    counted = "Of the 4 events, 1 of users the served bundle does not know (no training history"
    assert counted in result.output and counted in (report / "report.md").read_text()
    assert "; 1 of items not in the service's catalog; 0 of items in it" in result.output
    said = "The service did not store 1 of the posted events, unknown_item 1 (an item not in"
    assert said in result.output and said in (report / "report.md").read_text()


def test_in_process_and_served_figures_that_differ_are_flagged(served, tmp_path):
    """Replayed a second time, events already posted are seen by the service's feeds, not by
    the bundle in-process: the two rows differed in the report and nothing said so."""
    base, url, artifacts, _ = served
    top = load_active(connect(url)).recommend(["u14"], k=5).ids[0]
    path = tmp_path / "heldout.csv"
    path.write_text(
        "user_id,item_id,timestamp\n"
        f"u14,{top[0]},2025-04-01T00:00:00Z\nu14,{top[1]},2025-04-02T00:00:00Z\n"
    )
    out = tmp_path / "reports"
    args = ["--database-url", url, "--artifacts-dir", str(artifacts), "evaluate", "--replay"]
    args += ["--service", base, "--events", str(path), "--k", "5", "--out", str(out)]
    first = CliRunner().invoke(cli, [*args, "--no-post"])
    assert first.exit_code == 0 and "feeds differ" not in first.output
    posted = CliRunner().invoke(cli, [*args, "--api-key", ADMIN_TOKEN])
    assert posted.exit_code == 0, posted.output
    again = CliRunner().invoke(cli, [*args, "--no-post"])
    said = "warning: The in-process and served feeds differ (next-event hit rate@5 1.0000"
    assert said in again.output
    assert "already posted to the service by an earlier replay" in again.output
    report = max(out.iterdir())
    assert (
        "**Warning.** The in-process and served feeds differ" in (report / "report.md").read_text()
    )
