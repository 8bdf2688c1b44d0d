"""A real `recsys ingest` process killed with SIGKILL mid-file, then re-run, ends in the same
state as an uninterrupted run: nothing half-written, nothing duplicated. One test kills at a
random moment, one inside a batch's transaction after its rows were written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recsys.catalog import Interaction, User, connect, migrate
from recsys.ingest import IngestOptions, ingest_interactions, ingest_items
from tests.test_ingest import interaction_rows

ROWS = 40_000
BATCH = 500
USERS = 997

# `recsys` that kills itself with SIGKILL once the third batch's rows are written, before
# that batch's transaction commits.
KILL_IN_THIRD_BATCH = """
import os, signal, sys
import recsys.ingest.interactions as target
from recsys.cli import main

write, calls = target.upsert_interactions, []

def write_then_die(connection, rows):
    written = write(connection, rows)
    calls.append(rows.num_rows)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return written

target.upsert_interactions = write_then_die
sys.argv = ["recsys", *sys.argv[1:]]
main()
"""


def recsys(db_url: str, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "recsys", "--database-url", db_url, *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def count(engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count(Interaction.id)))


@pytest.fixture
def files(tmp_path):
    items = tmp_path / "items.csv"
    items.write_text("item_id\n" + "".join(f"i{n}\n" for n in range(300)))
    interactions = tmp_path / "interactions.csv"
    with open(interactions, "w") as file:
        file.write("user_id,item_id,event,timestamp\n")
        for n in range(ROWS):
            file.write(f"u{n % USERS},i{(n * 7) % 300},view,{1_600_000_000 + n}\n")
    return items, interactions


@pytest.mark.slow
def test_sigkill_mid_ingest_then_rerun_matches_clean_run(db_url, files, tmp_path):
    items, interactions = files
    engine = connect(db_url)
    migrate.upgrade(engine)
    ingest_items(engine, items, options=IngestOptions(show_progress=False))

    process = recsys(
        db_url, "ingest", "interactions", str(interactions), "--batch-size", str(BATCH)
    )
    deadline = time.monotonic() + 60
    while count(engine) < 5 * BATCH and time.monotonic() < deadline:
        assert process.poll() is None, "ingest finished before it could be killed"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = count(engine)
    assert 0 < partial < ROWS
    assert partial % BATCH == 0, "a batch was half-committed"

    rerun_matches_clean_run(db_url, engine, files, tmp_path)


@pytest.mark.slow
def test_sigterm_mid_ingest_says_what_was_stored_and_exits_143(db_url, files, tmp_path):
    """SIGTERM (what cron, Airflow and Kubernetes send) stopped an ingest with nothing said
    and nothing cleaned up; it takes Ctrl-C's path now, with the shell's code for SIGTERM."""
    items, interactions = files
    engine = connect(db_url)
    migrate.upgrade(engine)
    ingest_items(engine, items, options=IngestOptions(show_progress=False))
    args = ("ingest", "interactions", str(interactions), "--batch-size", str(BATCH), "--json")
    process = recsys(db_url, *args)
    deadline = time.monotonic() + 60
    while count(engine) < 5 * BATCH and time.monotonic() < deadline:
        assert process.poll() is None, "ingest finished before it could be stopped"
        time.sleep(0.02)
    process.terminate()
    output, _ = process.communicate(timeout=60)

    assert process.returncode == 143, output.decode()
    stored = count(engine)
    said = output.decode()
    assert f"terminated; {stored:,} rows were stored, in whole batches" in said
    assert '"error"' in said and f'"accepted": {stored}' in said  # --json says it too
    assert not list(tmp_path.glob(".*.tmp"))  # the rejects file's temporary copy


@pytest.mark.slow
def test_sigkill_inside_a_batch_leaves_none_of_that_batch(db_url, files, tmp_path):
    items, interactions = files
    engine = connect(db_url)
    migrate.upgrade(engine)
    ingest_items(engine, items, options=IngestOptions(show_progress=False))
    command = [sys.executable, "-c", KILL_IN_THIRD_BATCH, "--database-url", db_url]
    command += ["ingest", "interactions", str(interactions), "--batch-size", str(BATCH), "-q"]

    killed = subprocess.run(command, capture_output=True, timeout=300)

    assert killed.returncode == -signal.SIGKILL, killed.stdout.decode() + killed.stderr.decode()
    assert count(engine) == 2 * BATCH, "the killed batch left rows behind"
    with Session(engine) as session:
        assert session.scalar(select(func.count(User.id))) == min(2 * BATCH, USERS)
    rerun_matches_clean_run(db_url, engine, files, tmp_path)


def rerun_matches_clean_run(db_url, engine, files, tmp_path) -> None:
    items, interactions = files
    rerun = recsys(db_url, "ingest", "interactions", str(interactions), "-q", "--json")
    output, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output.decode()

    clean = connect(f"sqlite:///{tmp_path / f'clean-{uuid.uuid4().hex}.db'}")
    migrate.upgrade(clean)
    ingest_items(clean, items, options=IngestOptions(show_progress=False))
    ingest_interactions(clean, interactions, IngestOptions(show_progress=False))
    assert count(engine) == count(clean) == ROWS
    assert interaction_rows(engine) == interaction_rows(clean)
    with Session(engine) as session:
        assert session.scalar(select(func.count(User.id))) == USERS
    engine.dispose()
