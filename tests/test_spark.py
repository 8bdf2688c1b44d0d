"""Event logs as Parquet and ALS on Spark (issue 19): the export/read round trip, the exact
solver (implicit's ALS on Spark), the mapping of implicit's hyperparameters to MLlib's, and a
bundle trained on a local[2] Spark session."""

from __future__ import annotations

import json
import shutil
import socket
import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from recsys.catalog import connect, migrate
from recsys.cli import cli
from recsys.engines import spark as spark_engine
from recsys.engines import spark_als
from recsys.engines.events import EXPORT_FILE, export_interactions, read_events
from recsys.errors import InvalidInput
from recsys.ingest.interactions import record_interactions
from recsys.model.bundle import load_active
from recsys.model.cf import CFConfig, CollaborativeModel, confidence_matrix
from recsys.model.data import read_interactions
from recsys.model.training import train
from tests.shop_fixture import populate, train_config
from tests.toy import toy_catalog

KEY = ["user_id", "item_id", "event", "timestamp"]


def spark_missing() -> str | None:
    try:
        spark_engine.require_spark()
    except spark_engine.SparkUnavailable as exc:
        return str(exc)
    return None


needs_spark = pytest.mark.skipif(
    spark_missing() is not None, reason=f"pyspark or Java 17 missing: {spark_missing()}"
)


@pytest.fixture(scope="module")
def spark():
    conf = {"spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false"}
    session = spark_engine.session("local[2]", conf)
    yield session
    session.stop()


def sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.sort_values(KEY).reset_index(drop=True)
    return frame.astype({"timestamp": "datetime64[us]", "weight": float})


# -- Parquet events ----------------------------------------------------------------------------
def test_export_and_read_lose_nothing(engine, run_cli, tmp_path):
    populate(engine)
    untimed = tmp_path / "untimed.csv"  # an event without a time: kept, under no day
    untimed.write_text("user_id,item_id,event,weight\nu0,a9,purchase,2.5\n")
    run_cli("ingest", "interactions", untimed)
    out = tmp_path / "events"
    summary = export_interactions(engine, out)
    catalog = read_interactions(engine)
    assert catalog["timestamp"].isna().sum() == 1
    assert summary["rows"] == len(catalog) and summary["days"] == 8
    folders = sorted(p.name for p in out.iterdir())
    assert folders[:3] == [EXPORT_FILE, "day=2024-01-01", "day=2024-01-02"]
    assert folders[-1] == "day=__HIVE_DEFAULT_PARTITION__"
    stray = out / "day=2024-01-01" / "part-0.parquet.rejects.csv"  # an ingest of a part's
    stray.write_text("line,reason\n")
    part = next((out / "day=2024-01-01").glob("*.parquet"))
    for leftover in ("_temporary/0/task", "day=2024-01-01/.spark-staging"):  # a failed job's
        (out / leftover).mkdir(parents=True)
        shutil.copy(part, out / leftover / "part-9.parquet")
    events = read_events(out)  # the parts alone
    pd.testing.assert_frame_equal(sorted_rows(events), sorted_rows(catalog))
    # the same confidences, time decay included, whichever source the rows came from
    config = CFConfig(event_weights={"click": 3.0}, half_life_days=2.0)
    users = np.sort(catalog["user_id"].unique()).astype(str)
    items = np.sort(catalog["item_id"].unique()).astype(str)
    from_catalog = confidence_matrix(catalog, users, items, config)
    from_parquet = confidence_matrix(events, users, items, config)
    assert (from_catalog != from_parquet).nnz == 0 and from_catalog.data.min() < 3.0


def test_an_event_folder_is_held_to_the_ingest_rules(tmp_path, caplog):
    """`recsys train --events` read what ingest refuses: NaN and negative weights, " View"
    as its own event type, " u1" as a new user, and a year-1500 event as the newest (time
    decay overflowed); the rows a rule refuses are now left out and counted."""
    stamps = pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "1500-01-01",
                             "2024-01-05", "2024-01-06"]).astype("datetime64[us]")  # fmt: skip
    table = pa.table(
        {
            "user_id": [" u1", "u1", "u2", "u2", "u3", "u3"],
            "item_id": ["a1", "a2 ", "a1", "a2", "a1", "a2"],
            "event": [" View", "view", "CLICK", "view", "view", "view"],
            "weight": [1.0, 2.0, float("nan"), 1.0, -5.0, 1.0],
            "timestamp": pa.array(stamps, pa.timestamp("us")),
        }
    )
    (tmp_path / "events").mkdir()
    pq.write_table(table, tmp_path / "events" / "part-0.parquet")
    events = read_events(tmp_path / "events")
    assert events["user_id"].tolist() == ["u1", "u1", "u3"]
    assert events["item_id"].tolist() == ["a1", "a2", "a2"]
    assert events["event"].tolist() == ["view", "view", "view"]
    assert "3 of 6 rows refused by the ingest rules" in caplog.text
    words = pa.table({"user_id": ["u1"], "item_id": ["a1"], "weight": ["high"]})
    pq.write_table(words, tmp_path / "words.parquet")
    assert read_events(tmp_path / "words.parquet").empty  # a reject, not an ArrowInvalid
    said = [line for line in caplog.text.splitlines() if "words.parquet: 1 of 1 rows" in line]
    assert len(said) == 1 and "weight" in said[0]


def test_a_bundle_trained_from_a_folder_leaves_out_users_erased_since_its_export(
    engine, run_cli, tmp_path
):
    """An erasure held for the catalog only: a folder exported before it trained a bundle
    holding the erased shopper, and `bundles activate` of an older bundle said nothing."""
    populate(engine)
    out = tmp_path / "events"
    export_interactions(engine, out)
    first = train(engine, tmp_path / "artifacts", train_config(), device="cpu", events=str(out))
    assert "u1" in load_active(engine).user_index
    run_cli("users", "erase", "u1")
    train(engine, tmp_path / "artifacts", train_config(), device="cpu", events=str(out))
    assert "u1" not in load_active(engine).user_index and "u2" in load_active(engine).user_index
    back = run_cli("bundles", "activate", first.version)
    assert "1 of this bundle's users was erased after its data was read" in back.stderr


def test_a_folder_exported_after_a_shopper_came_back_keeps_their_new_events(
    engine, run_cli, tmp_path
):
    """A shopper erased and back within the day (events the HTTP API dated itself) was left
    out of a bundle trained from the catalog's export: the folder's reading took back every
    event dated up to a day after the erasure, as an ingest does."""
    populate(engine)
    run_cli("users", "erase", "u1")
    back = [{"user_id": "u1", "item_id": item} for item in ("a1", "a2", "a3")]
    assert record_interactions(engine, back).inserted == 3
    out = tmp_path / "events"
    export_interactions(engine, out)
    train(engine, tmp_path / "artifacts", train_config(), device="cpu", events=str(out))
    assert "u1" in load_active(engine).user_index


def test_export_refuses_a_non_empty_folder_and_replaces_it_whole(engine, run_cli, tmp_path):
    """--overwrite replaces an earlier export whole, and nothing else: a folder holding
    anything an export does not write (here a prepared shop's files) is refused and kept."""
    populate(engine)
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "items.csv").write_text("item_id\na1\n")
    for flags in ([], ["--overwrite"]):
        refused = run_cli("export", "interactions", "--out", shop, *flags, expect_exit=2)
        assert (shop / "items.csv").read_text() == "item_id\na1\n"
    assert "is not an earlier export (it holds items.csv)" in refused.output
    out = tmp_path / "events"
    run_cli("export", "interactions", "--out", out, "-q")  # -q was "No such option"
    stale = out / "day=1999-01-01"
    stale.mkdir()
    refused = run_cli("export", "interactions", "--out", out, expect_exit=2)
    assert "--overwrite" in refused.output
    done = run_cli("export", "interactions", "--out", out, "--overwrite")
    assert f"{len(read_interactions(engine))} interactions over 8 days" in done.output
    assert not stale.exists()
    assert json.loads((out / EXPORT_FILE).read_text())["rows"] == len(read_events(out))
    assert not list(tmp_path.glob(".events*"))  # no staging folder left behind


def test_an_export_removes_what_a_killed_export_left(engine, tmp_path):
    """kill -9 mid-export left its staging folder (19 MB at 2M events) for good."""
    import os
    import subprocess
    import sys

    populate(engine)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    dead = tmp_path / f".events.{gone}-0123abcd.tmp"
    running = tmp_path / f".events.{os.getpid()}-4567abcd.tmp"  # another export, under way
    for folder in (dead, running):
        (folder / "day=2024-01-01").mkdir(parents=True)
    export_interactions(engine, tmp_path / "events")
    assert not dead.exists() and running.exists()


def test_an_event_folder_without_events_says_so(tmp_path):
    """An export of a catalog without events said "no column item_id, user_id"."""
    with pytest.raises(InvalidInput, match="no Parquet file in the folder"):
        read_events(tmp_path)


def test_cli_trains_on_an_event_folder(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"  # one backend: the export tests cover both
    engine = connect(url)
    migrate.upgrade(engine)
    populate(engine)

    def run(*args):
        result = CliRunner().invoke(cli, ["--database-url", url, *map(str, args)])
        assert result.exit_code == 0, result.output
        return result.output

    run("export", "interactions", "--out", tmp_path / "events")
    with engine.begin() as connection:  # the catalog's own events are not what is read
        connection.exec_driver_sql("DELETE FROM interactions")
    assert "written to" in run(
        "--artifacts-dir", tmp_path, "train", "--events", tmp_path / "events", "--quiet"
    )
    rows = json.loads(run("recommend", "--user", "u9", "-k", "3", "--json"))
    assert rows[0]["fallback"] is False and all(i.startswith("b") for i in rows[0]["ids"])


def test_read_events_of_a_foreign_log(tmp_path):
    """A data lake's file: integer ids, zoned times, no event or weight column; rows of items
    the catalog lacks are left out."""
    stamps = pa.array([0, 86_400, 172_800], pa.timestamp("s", tz="Europe/Paris"))
    table = pa.table({"user_id": [1, 1, 2], "item_id": [10, 11, 99], "timestamp": stamps})
    pq.write_table(table, tmp_path / "log.parquet")
    events = read_events(tmp_path / "log.parquet", np.array(["10", "11"]))
    assert events["user_id"].tolist() == ["1", "1"] and events["item_id"].tolist() == ["10", "11"]
    assert events["event"].tolist() == ["interaction"] * 2 and events["weight"].tolist() == [1, 1]
    assert events["timestamp"].tolist() == [pd.Timestamp("1970-01-01"), pd.Timestamp("1970-01-02")]
    with pytest.raises(InvalidInput, match="user_id"):
        pq.write_table(pa.table({"item_id": [1]}), tmp_path / "bad.parquet")
        read_events(tmp_path / "bad.parquet")
    with pytest.raises(InvalidInput, match="recsys export interactions"):
        read_events(tmp_path / "nowhere")


def numbered_events() -> pd.DataFrame:
    """The toy catalog's events with numbers for user ids ("u7" is 7), as a lake's jobs write."""
    events = toy_catalog().interactions.copy()
    events["user_id"] = events["user_id"].str[1:].astype(int)
    return events


def write_jobs_folder(folder) -> pd.DataFrame:
    """A folder three jobs wrote over time, each with its own types: int64 ids and naive
    nanoseconds, then pandas' float ids (an id column with a gap) and zoned milliseconds,
    then string ids (one " 7 ", one "guest-456"); and an empty partition pandas wrote with
    null-typed columns, sorting first. Returns the events as read from the catalog."""
    events = numbered_events()
    days = events["timestamp"].dt.strftime("%Y-%m-%d")
    first, second = sorted(days.unique())[2], sorted(days.unique())[4]
    jobs = [events[days < first], events[(days >= first) & (days < second)], events[days >= second]]

    def write(day, table):
        (folder / f"day={day}").mkdir(parents=True)
        pq.write_table(table, folder / f"day={day}" / "part-0.parquet")

    empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in KEY})
    write("0-empty", pa.Table.from_pandas(empty, preserve_index=False))
    old, mid, new = jobs
    write(
        "1-old",
        pa.table(
            {
                "user_id": pa.array(old["user_id"], pa.int64()),
                "item_id": old["item_id"],
                "event": old["event"],
                "weight": old["weight"].astype(float),
                "timestamp": pa.array(old["timestamp"].astype("datetime64[ns]")),
            }
        ),
    )
    zoned = mid["timestamp"].dt.tz_localize("UTC").dt.tz_convert("+02:00")
    write(
        "2-mid",
        pa.table(
            {
                "user_id": pa.array([*mid["user_id"].astype(float), None]),
                "item_id": [*mid["item_id"], "a1"],
                "event": [*mid["event"], "view"],
                "weight": [*mid["weight"].astype(float), 1.0],
                "timestamp": pa.array([*zoned, zoned.iloc[0]], pa.timestamp("ms", "+02:00")),
            }
        ),
    )
    ids = [" 7 " if u == 7 else str(u) for u in new["user_id"]]
    write("3-new", pa.table({"user_id": [*ids, "guest-456"], "item_id": [*new["item_id"], "a1"],
                           "event": [*new["event"], "view"],
                           "weight": [*new["weight"].astype(float), 1.0],
                           "timestamp": pa.array([*new["timestamp"], new["timestamp"].iloc[0]],
                                                 pa.timestamp("us", "UTC"))}))  # fmt: skip
    return events


def test_each_file_of_a_folder_is_read_with_its_own_types(tmp_path, caplog):
    """A lake's jobs differ in types over a year; a dataset read every file with the first
    file's schema: a later string id was an ArrowInvalid, an empty null-typed partition
    sorting first an ArrowNotImplementedError, and ids 7, 7.0 and " 7 " are one user."""
    events = write_jobs_folder(tmp_path / "events")
    read = read_events(tmp_path / "events")
    users = sorted(set(events["user_id"].astype(str)) | {"guest-456"})
    assert sorted(read["user_id"].unique()) == users
    assert len(read) == len(events) + 1  # guest-456's; the row without a user is left out
    times = read[read["user_id"] != "guest-456"]
    assert times["timestamp"].sort_values().tolist() == events["timestamp"].sort_values().tolist()
    said = f"1 of {len(events) + 2} rows left out: 1 without a user id, 0 without an item id"
    assert said in caplog.text


def test_a_file_of_epoch_milliseconds_is_refused_naming_it(tmp_path):
    """A later job wrote int64 epoch milliseconds: cast to the first file's timestamp[us],
    its events were dated January 1970 and training exited 0."""
    events = numbered_events()
    (tmp_path / "day=1").mkdir()
    (tmp_path / "day=2").mkdir()
    half = len(events) // 2
    pq.write_table(pa.Table.from_pandas(events[:half], preserve_index=False),
                   tmp_path / "day=1" / "part-0.parquet")  # fmt: skip
    late = events[half:].assign(timestamp=events["timestamp"][half:].astype("int64") // 1000)
    pq.write_table(pa.Table.from_pandas(late, preserve_index=False),
                   tmp_path / "day=2" / "part-0.parquet")  # fmt: skip
    with pytest.raises(InvalidInput) as refused:
        read_events(tmp_path)
    message = str(refused.value)
    assert (
        "day=2/part-0.parquet: timestamp" in message and "milliseconds? divide by 1,000" in message
    )


def test_a_folder_of_jobs_trains_one_user_per_id(engine, tmp_path):
    populate(engine)
    events = write_jobs_folder(tmp_path / "events")
    train(
        engine,
        tmp_path / "artifacts",
        train_config(),
        device="cpu",
        events=str(tmp_path / "events"),
    )
    users = set(load_active(engine).user_index)
    assert set(events["user_id"].astype(str)) <= users and "7.0" not in users


def test_spark_refuses_a_folder_it_cannot_read_before_any_work(engine, tmp_path):
    """Spark reads a folder with one file's types: ids int64 in some files and string in
    others, or times in nanoseconds, failed minutes into a training, after the weights
    stage. A check of the files' footers refuses them first, in one line."""
    populate(engine)
    write_jobs_folder(tmp_path / "events")
    config = replace(train_config(), cf=replace(train_config().cf, engine="spark"))
    with pytest.raises(InvalidInput) as refused:
        train(engine, tmp_path / "art", config, device="cpu", events=str(tmp_path / "events"))
    message = str(refused.value)
    assert "day=1-old/part-0.parquet: timestamp is timestamp[ns]" in message
    assert "write timestamp as a timestamp in microseconds" in message and "\n" not in message
    assert not (tmp_path / "art" / "bundles").exists() or not list(
        (tmp_path / "art" / "bundles").iterdir()
    )
    old = tmp_path / "events" / "day=1-old" / "part-0.parquet"
    table = pq.read_table(old)
    pq.write_table(
        table.set_column(4, "timestamp", table["timestamp"].cast(pa.timestamp("us"))), old
    )
    with pytest.raises(InvalidInput) as refused:
        spark_engine.folder_schema(tmp_path / "events")
    message = str(refused.value)
    assert "user_id is int64 in" in message and "day=1-old/part-0.parquet but double in" in message
    assert "write user_id as string in every file" in message


@needs_spark
def test_spark_reads_float_and_padded_ids_as_the_driver_does(spark, tmp_path):
    """Spark's cast made the double id 1938.0 "1938.0" where the driver reads "1938": every
    user of a Spark bundle got the popularity fallback."""
    events = numbered_events()
    for n, part in enumerate((events[:40], events[40:])):
        ids = [*part["user_id"].astype(float), None]  # pandas' int ids with a gap: doubles
        padded = [f" {item} " for item in [*part["item_id"], "a1"]]
        times = pa.array([*part["timestamp"], None], pa.timestamp("us"))
        table = pa.table({"user_id": ids, "item_id": padded, "timestamp": times})
        pq.write_table(table, tmp_path / f"part-{n}.parquet")
    items = toy_catalog().items["item_id"].to_numpy(dtype=str)
    schema = spark_engine.folder_schema(tmp_path)
    assert schema.startswith("`user_id` double, `item_id` string")
    frame = spark.read.schema(schema).parquet(str(tmp_path))
    entries = spark_engine.event_confidences(spark, frame, items, SPARK_CONFIG).toPandas()
    driver = read_events(tmp_path, items)
    assert sorted(entries["user_id"].unique()) == sorted(driver["user_id"].unique())
    assert "7" in set(entries["user_id"]) and len(entries) == len(
        driver.groupby(["user_id", "item_id"])
    )


# -- the hyperparameter mapping ---------------------------------------------------------------
def test_mllib_regularisation_totals_implicits():
    """MLlib scales lambda by each row's entries (ALS-WR); the mapped lambda' puts the same
    total penalty weight on all user and item rows as implicit's lambda on each."""
    matrix = confidence_matrix(
        toy_catalog().interactions, *_ids(toy_catalog().interactions), CFConfig()
    )
    config = CFConfig(regularization=0.2)
    users, items = matrix.shape
    params = spark_engine.als_params(config, users, items, matrix.nnz)
    per_row = np.concatenate([matrix.getnnz(axis=1), matrix.getnnz(axis=0)]) * params.reg_param
    assert per_row.sum() == pytest.approx(config.regularization * (users + items))
    assert (params.rank, params.max_iter, params.seed) == (32, 15, 0)


def _ids(interactions):
    return (
        np.sort(interactions["user_id"].unique()).astype(str),
        np.sort(interactions["item_id"].unique()).astype(str),
    )


# -- errors when Spark is missing -------------------------------------------------------------
def test_no_java_names_what_to_install(monkeypatch):
    monkeypatch.setattr(spark_engine, "_java", lambda: None)
    with pytest.raises(spark_engine.SparkUnavailable, match="openjdk-17-jre-headless"):
        spark_engine.require_spark()


def test_a_master_where_nothing_listens_fails_fast_naming_it(monkeypatch):
    """A standalone master that does not answer: Spark retried for over a minute, then said
    "Cannot call methods on a stopped SparkContext" under a Java stack trace."""
    pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession

    monkeypatch.setattr(SparkSession, "getActiveSession", staticmethod(lambda: None))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free again once closed: nothing listens there
    started = time.perf_counter()
    with pytest.raises(spark_engine.SparkUnavailable, match="no Spark master answers at"):
        spark_engine.session(f"spark://127.0.0.1:{port}")
    assert time.perf_counter() - started < 10


def test_no_pyspark_names_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark -> ImportError
    with pytest.raises(spark_engine.SparkUnavailable, match=r'pip install -e "\.\[spark\]"'):
        spark_engine.require_spark()
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    failed = CliRunner().invoke(cli, ["--database-url", url, "train", "--cf-engine", "spark"])
    assert failed.exit_code == 2 and 'pip install -e ".[spark]"' in failed.output
    bpr = CliRunner().invoke(
        cli, ["--database-url", url, "train", "--cf-engine", "spark", "--model", "bpr"]
    )
    assert bpr.exit_code == 2 and "MLlib has no BPR" in bpr.output


# -- the exact solver's step -------------------------------------------------------------------
def test_exact_step_solves_implicits_normal_equations():
    """Every row of a block, solved at once, equals implicit's own (slow, per-row) reference
    step ``implicit.cpu.als.user_factor``: confidences below 1, above 1 and negative (a
    dislike), ids unsorted, one row longer than a chunk of outer products."""
    from implicit.cpu.als import user_factor

    rng = np.random.default_rng(0)
    rows, cols, rank, reg = 6, 5_000, 4, 0.3
    item_factors = rng.normal(size=(cols, rank))
    matrix = sp.random(rows, cols, density=0.02, random_state=1, format="lil")
    matrix[0, : spark_als.CHUNK + 10] = 0.7  # spans two chunks
    matrix = matrix.tocsr()
    matrix.data = rng.uniform(-1.0, 3.0, matrix.nnz)
    coo = matrix.tocoo()
    shuffle = rng.permutation(matrix.nnz)
    gram = item_factors.T @ item_factors + reg * np.eye(rank)
    ids, factors = spark_als.solve_rows(
        coo.row[shuffle], coo.data[shuffle], item_factors[coo.col[shuffle]], gram
    )
    yty = item_factors.T @ item_factors
    expected = [user_factor(item_factors, yty, matrix, u, reg, rank) for u in range(rows)]
    np.testing.assert_array_equal(ids, np.arange(rows))
    np.testing.assert_allclose(factors, expected, rtol=1e-8, atol=1e-10)


def test_cg_step_is_implicits_conjugate_gradient():
    """Three conjugate-gradient steps for every row at once, from the rows' previous factors:
    implicit's own (slow, per-row) ``least_squares_cg``; a row already solved stays put."""
    from implicit.cpu.als import least_squares_cg

    rng = np.random.default_rng(1)
    rows, cols, rank, reg = 7, 300, 5, 0.2
    item_factors = rng.normal(size=(cols, rank))
    matrix = sp.random(rows, cols, density=0.1, random_state=3, format="csr")
    matrix.data = rng.uniform(-1.0, 3.0, matrix.nnz)
    start = rng.normal(size=(rows, rank))
    gram = item_factors.T @ item_factors + reg * np.eye(rank)
    start[6] = spark_als.solve_rows(*_entries(matrix, item_factors, [6]), gram)[1][0]
    expected = start.copy()
    least_squares_cg(matrix, expected, item_factors, reg, cg_steps=3)
    ids, factors = spark_als.cg_rows(*_entries(matrix, item_factors), gram, start, 3)
    np.testing.assert_array_equal(ids, np.arange(rows))
    np.testing.assert_allclose(factors, expected, rtol=1e-8, atol=1e-10)
    assert np.abs(factors - start)[:6].max() > 0.1
    np.testing.assert_allclose(factors[6], start[6], atol=1e-8)


def _entries(matrix, item_factors, rows=None):
    """(row ids, confidences, item factor rows) of a matrix's entries, shuffled."""
    coo = matrix.tocoo()
    keep = np.isin(coo.row, rows) if rows is not None else np.ones(coo.nnz, bool)
    order = np.random.default_rng(0).permutation(np.flatnonzero(keep))
    return coo.row[order], coo.data[order], item_factors[coo.col[order]]


# -- ALS on a local[2] session ----------------------------------------------------------------
@needs_spark
def test_cg_solver_reproduces_implicits_default_als(spark):
    """Spark's "cg" solver from the same seed: implicit's default fit (3 conjugate-gradient
    steps per row, from implicit's initial user and item factors drawn on the executors)."""
    from implicit.als import AlternatingLeastSquares

    matrix = _toy_matrix()
    config = CFConfig(engine="spark", spark_solver="cg", **TOY_ALS)
    user_factors, item_factors = spark_engine.fit_als(matrix, config, spark)
    als = AlternatingLeastSquares(**TOY_ALS)
    als.fit(matrix, show_progress=False)
    np.testing.assert_allclose(user_factors, als.user_factors, atol=1e-4)
    np.testing.assert_allclose(item_factors, als.item_factors, atol=1e-4)


TOY_ALS = {"factors": 5, "iterations": 3, "regularization": 0.3, "alpha": 1.5, "random_state": 7}


def _toy_matrix():
    """15 users x 12 items (15 x 5 factors: an odd count of draws before the items'), weights
    0..3 (below and above 1) and a dislike."""
    matrix = sp.random(15, 12, density=0.3, random_state=2, format="csr", dtype=np.float32)
    matrix.data = (matrix.data * 3).astype(np.float32)
    matrix.data[0] = -1.5
    return matrix


@needs_spark
def test_exact_solver_reproduces_implicits_exact_als(spark):
    """Spark's exact solver from the same seed: implicit's ``use_cg=False`` factors (its
    initial item factors drawn on the executors), not its default's (3 CG steps); and
    implicit's own fold-in (``recalculate_user``) of a Spark bundle's user."""
    from implicit.als import AlternatingLeastSquares

    matrix = _toy_matrix()
    config = CFConfig(engine="spark", spark_solver="exact", **TOY_ALS)
    user_factors, item_factors = spark_engine.fit_als(matrix, config, spark)
    als = AlternatingLeastSquares(**TOY_ALS, use_cg=False)
    als.fit(matrix, show_progress=False)
    np.testing.assert_allclose(user_factors, als.user_factors, atol=1e-5)
    np.testing.assert_allclose(item_factors, als.item_factors, atol=1e-5)
    cg = AlternatingLeastSquares(**TOY_ALS)
    cg.fit(matrix, show_progress=False)
    assert np.abs(cg.item_factors - item_factors).max() > 1e-3  # 3 CG steps: not the same

    model = CollaborativeModel(config)
    model.item_ids_ = np.array([f"i{k}" for k in range(12)])
    model.user_ids_ = np.array([f"u{k:02d}" for k in range(15)])
    model.user_items_ = matrix
    model._fitted(user_factors, item_factors)
    for user in (0, 4):
        row = matrix[user]
        folded = model.fold_in(model.item_ids_[row.indices], row.data)
        expected = als.recalculate_user(user, row)
        np.testing.assert_allclose(folded, expected, rtol=1e-4, atol=1e-5)


def test_a_spark_bundle_saved_before_the_solvers_folds_in_as_mllib(tmp_path):
    """Bundles saved without ``spark_solver`` were fitted by MLlib: they load as "mllib", so
    fold-in keeps solving the step their factors came from; others keep theirs."""
    data = toy_catalog()
    model = CollaborativeModel(CFConfig(factors=4, iterations=2)).fit(data.interactions)
    model.save(tmp_path)
    path = tmp_path / "cf_config.json"
    saved = json.loads(path.read_text())
    assert CollaborativeModel.load(tmp_path).config.spark_solver == "cg"  # the default
    saved.update(engine="spark")
    path.write_text(json.dumps({k: v for k, v in saved.items() if k != "spark_solver"}))
    assert CollaborativeModel.load(tmp_path).config.spark_solver == "mllib"
    path.write_text(json.dumps(saved | {"spark_solver": "exact"}))
    assert CollaborativeModel.load(tmp_path).config.spark_solver == "exact"
    with pytest.raises(ValueError, match="spark_solver"):
        CFConfig(spark_solver="newton")


# Event weight 3 with a 2-day half-life: implicit weighs the toy's entries 0.27..3, below 1/2,
# between 1/2 and 1 and above 1: each rule of MLlib's ratings (recsys.engines.spark).
SPARK_CONFIG = CFConfig(
    engine="spark",
    factors=8,
    iterations=5,
    regularization=0.5,
    event_weights={"click": 3.0},
    half_life_days=2.0,
    use_interaction_weight=True,
)


@pytest.fixture(scope="module")
def toy_events(tmp_path_factory):
    """The toy catalog's events as a Parquet file, with a repeated pair, an event without a
    time, one of an item the catalog lacks and one without a user."""
    extra = pd.DataFrame(
        [
            ("u3", "a9", "purchase", 2.5, pd.NaT),
            ("u3", "gone", "click", 1.0, pd.Timestamp("2024-01-02")),
            (None, "a1", "click", 1.0, pd.Timestamp("2024-01-02")),
        ],
        columns=["user_id", "item_id", "event", "weight", "timestamp"],
    )
    frame = pd.concat([toy_catalog().interactions, extra], ignore_index=True)
    path = tmp_path_factory.mktemp("toy_events") / "events.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


@pytest.fixture(scope="module", params=["cg", "mllib"])
def spark_model(request, spark, toy_events):
    items = toy_catalog().items["item_id"]
    config = replace(SPARK_CONFIG, spark_solver=request.param)
    return CollaborativeModel(config).fit_events(str(toy_events), items)


def test_mllib_weighs_entries_nearest_implicit():
    """MLlib weighs an observed entry 1 + |r| (alpha 1): as implicit's alpha * w from 1 up;
    weight 1 at preference 1 for 1/2..1, and an unobserved pair (r = 0: preference 0 at
    weight 1) below 1/2, nearest implicit's terms in the user step; dislikes keep their
    sign."""
    implicit = np.array([3.0, 1.5, 1.0, 0.6, 0.4, 0.01, -0.2, -2.0])
    eps = spark_engine.EPSILON
    ratings = spark_engine.mllib_ratings(implicit)
    np.testing.assert_allclose(ratings, [2.0, 0.5, eps, eps, 0, 0, 0, -1.0], atol=1e-12)
    confidence = spark_engine.mllib_confidence(implicit)
    np.testing.assert_allclose(confidence, [3.0, 1.5, 1 + eps, 1 + eps, -1, -1, -1, -2.0])


@needs_spark
def test_spark_aggregates_the_confidences_the_driver_would(spark_model, toy_events):
    items = toy_catalog().items["item_id"].to_numpy(dtype=str)
    events = read_events(toy_events, items)
    users = np.sort(events["user_id"].unique()).astype(str)
    expected = confidence_matrix(events, users, items, SPARK_CONFIG)
    np.testing.assert_array_equal(spark_model.user_ids_, users)
    np.testing.assert_allclose(spark_model.user_items_.toarray(), expected.toarray(), rtol=1e-6)
    assert expected.data.min() < spark_engine.KEEP < 1 < expected.data.max()  # all rules


@needs_spark
def test_spark_als_learns_the_taste_clusters(spark_model):
    model = spark_model
    assert model.device_ == "spark" and model.user_factors_.shape == (16, 8)
    scores = model.user_factors_ @ model.item_factors_.T  # (U, I)
    top = model.item_ids_[np.argsort(-scores, axis=1)[:, :5]]
    groups = {user: "a" if int(user[1:]) < 8 else "b" for user in model.user_ids_}
    assert all(
        i.startswith(groups[u]) for u, row in zip(model.user_ids_, top, strict=True) for i in row
    )
    assert not model.item_factors_[~model.warm_items_].any()  # a-new, b-new: no factors


@needs_spark
@pytest.mark.parametrize("spark_model", ["mllib"], indirect=True)
def test_fold_in_solves_mllibs_user_step(spark_model):
    """MLlib's last step solves every user against the final item factors, with the ratings
    of the mapping and regularisation lambda' n_u: the step fold-in solves, so folding in a
    user's own row gives back that user's factors."""
    model = spark_model
    for user in ("u4", "u11"):
        row = model.user_items_[model.user_rows(user)[0]]
        folded = model.fold_in(model.item_ids_[row.indices], row.data)
        trained = model.user_factors_[model.user_rows(user)[0]]
        np.testing.assert_allclose(folded, trained, rtol=1e-3, atol=1e-4)


@needs_spark
@pytest.mark.slow
def test_a_spark_bundle_trained_on_exported_events_loads_and_answers(spark, tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 'catalog.db'}")  # one backend: Spark is the point
    migrate.upgrade(engine)
    populate(engine)
    out = tmp_path / "events"
    summary = export_interactions(engine, out)
    (out / "notes.txt").write_text("not a part")  # Spark reads the parts alone
    base = train_config()
    config = replace(base, cf=replace(base.cf, engine="spark", iterations=5))
    result = train(engine, tmp_path / "artifacts", config, device="cpu", events=str(out))
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["devices"]["cf"] == "spark"
    assert manifest["data_read_at"] == summary["exported_at"]
    assert manifest["counts"]["interactions"] == summary["rows"]
    recommender = load_active(engine)
    results = recommender.recommend(["u0", "u9", "nobody"], k=4)
    assert results.fallback == [False, False, True]
    assert all(item.startswith("a") for item in results.ids[0])
    assert all(item.startswith("b") for item in results.ids[1])
    folded = recommender.recommend_for_history([["a1", "a2", "a5"]], k=4)
    assert all(item.startswith("a") for item in folded.ids[0])


def test_export_writes_through_a_link_and_a_refused_write_is_one_line(
    engine, run_cli, tmp_path, monkeypatch
):
    """--out LINK replaced the link with the export (its target stayed empty); a dangling
    link, a read-only earlier export under --overwrite and a full disk were tracebacks."""
    import errno
    import os
    from pathlib import Path

    import pyarrow.dataset as ds

    populate(engine)
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    done = run_cli("export", "interactions", "--out", tmp_path / "link")
    assert done.output.endswith(f"written to {target}\n")
    assert (tmp_path / "link").is_symlink() and (target / EXPORT_FILE).is_file()
    (tmp_path / "dangling").symlink_to(tmp_path / "made")
    run_cli("export", "interactions", "--out", tmp_path / "dangling")
    assert (tmp_path / "made" / EXPORT_FILE).is_file()

    rename = Path.rename

    def refused(self, to):
        if self == target:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return rename(self, to)

    monkeypatch.setattr(Path, "rename", refused)
    result = run_cli("export", "interactions", "--out", target, "--overwrite", expect_exit=2)
    assert result.output == f"error: Permission denied: {target}\n"
    assert (target / EXPORT_FILE).is_file()

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "Error writing bytes to file")  # pyarrow's: no file

    monkeypatch.setattr(ds, "write_dataset", full)
    result = run_cli("export", "interactions", "--out", tmp_path / "new", expect_exit=2)
    assert result.output == f"error: No space left on device: {tmp_path / 'new'}\n"
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".*"))
