"""A failure repeating every second is logged as news: once with its traceback, then a line a
minute counting the repeats, then once when it works again."""

from __future__ import annotations

import logging

from recsys.logs import Repeated


def test_a_repeating_failure_logs_a_line_a_minute_and_its_end(caplog):
    now = [0.0]
    repeated = Repeated(
        logging.getLogger("t"), "following the catalog failed", clock=lambda: now[0]
    )
    caplog.set_level(logging.WARNING)
    for second in range(150):  # a worker's step every second, the database away 150 s
        now[0] = float(second)
        try:
            raise ConnectionError("database gone")
        except ConnectionError as exc:
            repeated.failed(exc)
    repeated.worked()
    repeated.worked()  # nothing more to say
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "following the catalog failed: database gone",
        "following the catalog failed, 60 more times since: database gone",
        "following the catalog failed, 60 more times since: database gone",
        "following the catalog failed no longer: it failed 150 times in a row",
    ]
    assert caplog.records[0].exc_info and not caplog.records[1].exc_info


def test_a_failure_that_comes_and_goes_is_not_news_each_time(caplog):
    """A database refusing one connection in three: each streak logged its traceback and a
    "no longer" line (3,086 lines in 25 s over a few workers)."""
    now = [0.0]
    repeated = Repeated(logging.getLogger("t"), "following failed", clock=lambda: now[0])
    caplog.set_level(logging.WARNING)
    for step in range(150):  # a step every second, every third one failing
        now[0] = float(step)
        if step % 3:
            repeated.worked()
            continue
        try:
            raise ConnectionError("too many clients")
        except ConnectionError as exc:
            repeated.failed(exc)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "following failed: too many clients",
        "following failed no longer: it failed 1 time in a row",
        "following failed, 20 more times since: too many clients",
        "following failed no longer: it failed 1 time in a row",
        "following failed, 20 more times since: too many clients",
        "following failed no longer: it failed 1 time in a row",
    ]
    assert sum(bool(record.exc_info) for record in caplog.records) == 1


def test_the_cli_writes_json_from_its_first_line_when_asked(tmp_path):
    """RECSYS_LOG_FORMAT=json: a misspelt variable's warning, written while the settings
    are read, came out as text ahead of the JSON lines."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "RECSYS_LOG_FORMAT": "json", "RECSYS_SPARK_MASTR": "local",
           "RECSYS_DATABASE_URL": f"sqlite:///{tmp_path / 'catalog.db'}"}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "recsys", "db", "upgrade"], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert "did you mean RECSYS_SPARK_MASTER" in lines[0]["message"]
