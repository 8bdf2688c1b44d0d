"""A failure that repeats every second (a worker's background steps, or every request, while
the catalog database is away) logged as news, not as a stream: three workers logged about
3,800 lines and 234 tracebacks in a 15-second database outage."""

from __future__ import annotations

import logging
import threading
import time


class Repeated:
    """Log ``what`` failing: the first failure with its traceback, then at most one line
    every ``every`` seconds counting the failures since, and one line when it works again."""

    def __init__(
        self, logger: logging.Logger, what: str, every: float = 60.0, clock=time.monotonic
    ):
        self.log, self.what, self.every, self.clock = logger, what, every, clock
        self._lock = threading.Lock()
        self._failures = self._unreported = 0
        self._last = 0.0

    def failed(self, exc: BaseException) -> None:
        """Call from the ``except`` block of a failure."""
        with self._lock:
            now = self.clock()
            self._failures += 1
            first = self._failures == 1
            due = first or now - self._last >= self.every
            if not due:
                self._unreported += 1
                return
            since, self._unreported, self._last = self._unreported, 0, now
        if first:
            self.log.error("%s: %s", self.what, exc, exc_info=exc)
        else:
            self.log.error("%s, %d more times since: %s", self.what, since + 1, exc)

    def worked(self) -> None:
        """Call after a success: says so once after failures."""
        if not self._failures:
            return
        with self._lock:
            failures, self._failures, self._unreported = self._failures, 0, 0
        self.log.warning("%s no longer: it failed %d times in a row", self.what, failures)
