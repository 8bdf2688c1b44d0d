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
