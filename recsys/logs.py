"""How the product logs: a failure that repeats every second (a worker's background steps, or
every request, while the catalog database is away) as news, not as a stream (three workers
logged about 3,800 lines and 234 tracebacks in a 15-second database outage); and each line as
text or as one JSON object (``Settings.log_format``)."""

from __future__ import annotations

import datetime
import json
import logging
import math
import threading
import time


class Repeated:
    """Log ``what`` failing: the first failure with its traceback, then at most one line
    every ``every`` seconds counting the failures since, and one line when it works again.

    The lines are spaced across streaks too: a failure that comes and goes (a database
    refusing one connection in three) logged a traceback and a "no longer" line at every
    turn (3,086 lines in 25 s); a streak that starts within ``every`` seconds of the last
    line is counted into the next one, and its end is not announced."""

    def __init__(
        self, logger: logging.Logger, what: str, every: float = 60.0, clock=time.monotonic
    ):
        self.log, self.what, self.every, self.clock = logger, what, every, clock
        self._lock = threading.Lock()
        self._failures = self._unreported = 0  # this streak's; since the last line
        self._last = -math.inf  # when the last line was logged
        self._reported = False  # this streak logged a line

    def failed(self, exc: BaseException) -> None:
        """Call from the ``except`` block of a failure."""
        with self._lock:
            now = self.clock()
            self._failures += 1
            if now - self._last < self.every:
                self._unreported += 1
                return
            since, self._unreported, self._last = self._unreported, 0, now
            fresh = self._failures == 1 and not since  # news: after a quiet spell
            self._reported = True
        if fresh:
            self.log.error("%s: %s", self.what, exc, exc_info=exc)
        else:
            self.log.error("%s, %d more times since: %s", self.what, since + 1, exc)

    def worked(self) -> None:
        """Call after a success: says so once after failures it reported."""
        if not self._failures:
            return
        with self._lock:
            failures, reported = self._failures, self._reported
            self._failures, self._reported = 0, False
        if reported:
            times = "time" if failures == 1 else "times"
            self.log.warning("%s no longer: it failed %d %s in a row", self.what, failures, times)


TEXT_FIELDS = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
TEXT_TIME = "%Y-%m-%d %H:%M:%S %z"


class JsonLines(logging.Formatter):
    """One JSON object a line, the fields a log collector indexes without a parsing rule:
    ``time`` (ISO 8601 in UTC, milliseconds), ``level``, ``logger``, ``pid`` and
    ``message``; ``request_id`` within a request, ``http`` on an access line, and ``error``
    (the traceback) when the record carries an exception."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for name in ("request_id", "http"):
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(kind: str) -> logging.Formatter:
    """The formatter of ``Settings.log_format``: "text" or "json"."""
    return JsonLines() if kind == "json" else logging.Formatter(TEXT_FIELDS, TEXT_TIME)
