"""gunicorn's classes of the service: a worker that spreads kept-alive connections over the
workers, and a logger that writes JSON lines (``JsonLogger``, with RECSYS_LOG_FORMAT=json).

Every gunicorn worker polls the one listening socket, and a new connection wakes them all; the
first to run accepts it. A worker that is already busy is the one most often running, so
under keep-alive load it takes nearly every connection: twelve connections opened at once
landed 12/0/0 or 9/2/1 on three gthread workers (``tests/test_service_gunicorn.py``). A
process runs Python on one core at a time, so that worker's requests queue behind each other
while the other workers idle, and the tail latency is that queue.

``BalancedThreadWorker`` is gunicorn's gthread worker that holds back from a new connection
for ``ACCEPT_DELAY`` seconds per connection it already has open: a worker with none accepts
at once, and each connection goes to the least busy worker that is awake (nginx's
``accept_mutex`` and Envoy's connection balancing solve the same problem). A held-back
connection is accepted by this worker once its delay has passed and no other took it, so a
lone worker, or one whose peers are all busier, still accepts every connection. Requests on
open connections are never delayed: only the accept is.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time

from gunicorn import glogging
from gunicorn.http.errors import NoMoreData
from gunicorn.workers import gthread
from gunicorn.workers.gthread import ThreadWorker

from recsys.logs import JsonLines
from services.logs import REQUEST_ID_HEADER

# Seconds a request thread waits for the next bytes of a request it is reading, and for the
# whole request (line, headers and body) once its first byte came: a client sending a byte
# and holding (slowloris) held a thread for as long as it liked, and a few such connections,
# one per thread, stopped every worker (tests/test_service_gunicorn.py).
READ_TIMEOUT = 10.0
REQUEST_DEADLINE = 120.0  # a 5 MB photo at 0.35 Mbit/s
# Seconds a response may take in all to reach a client that reads slowly (a thread is held
# meanwhile), and the piece of a file sent between two looks at that deadline.
SEND_DEADLINE = 120.0
SEND_PIECE = 256 * 1024
# Seconds a pool thread waits for a new connection's first bytes before the connection is
# handed back to the worker's poller (gunicorn's default is 5 s: 20 connections that sent
# nothing held every thread for 25 s). A client's request is served when it comes either way.
FIRST_DATA_WAIT = 0.5
# Seconds a worker waits, per connection it has open, before it accepts a new one.
ACCEPT_DELAY = 0.005
# The longest such wait (a worker with many open connections still accepts within this).
MAX_ACCEPT_DELAY = 0.1


class Deadlined:
    """A client socket whose blocking reads and sends time out: ``READ_TIMEOUT`` for each
    read and ``REQUEST_DEADLINE`` for all the reads of one request, from when the worker's
    thread took it (gunicorn's thread sets the socket blocking before it reads), and
    ``SEND_DEADLINE`` for the whole response. Past one, the client is taken as gone: the
    connection is closed, a body read in the app is a 400, and the log says it at debug
    level, not with a traceback per slow client. A timeout the caller sets itself (gunicorn's
    2 s linger when it closes a connection, on the worker's own loop) is the caller's: the
    deadlines made each close wait 10 s, and two clients that kept their socket open after
    the answer held a whole worker. Everything else is the socket's."""

    __slots__ = ("_deadline", "_sending", "_sock")

    def __init__(self, sock) -> None:
        self._sock = sock
        self._deadline = self._sending = None

    def setblocking(self, flag: bool) -> None:
        self._deadline = time.monotonic() + REQUEST_DEADLINE if flag else None
        self._sending = None
        self._sock.settimeout(READ_TIMEOUT if flag else 0.0)

    def settimeout(self, value) -> None:
        self._deadline = self._sending = None
        self._sock.settimeout(value)

    def _read(self, method, args):
        if self._deadline is None:
            return method(*args)
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise NoMoreData(b"")
        self._sock.settimeout(min(READ_TIMEOUT, left))
        try:
            return method(*args)
        except TimeoutError:
            raise NoMoreData(b"") from None

    def recv(self, *args):
        return self._read(self._sock.recv, args)

    def recv_into(self, *args):
        return self._read(self._sock.recv_into, args)

    def _send_left(self) -> float | None:
        """Seconds the response may still take (None: no deadline, the caller's timeout);
        ``BrokenPipeError`` once past it, which gunicorn takes as a client gone."""
        if self._deadline is None:
            return None
        if self._sending is None:
            self._sending = time.monotonic() + SEND_DEADLINE
        left = self._sending - time.monotonic()
        if left <= 0:
            raise BrokenPipeError(errno.EPIPE, "the client read the response too slowly")
        self._sock.settimeout(left)
        return left

    def _send(self, method, *args):
        self._send_left()
        try:
            return method(*args)
        except TimeoutError:
            raise BrokenPipeError(errno.EPIPE, "the client read the response too slowly") from None

    def sendall(self, *args):
        return self._send(self._sock.sendall, *args)

    def send(self, *args):
        return self._send(self._sock.send, *args)

    def sendfile(self, file, offset: int = 0, count: int | None = None) -> int:
        """The file sent in pieces, the deadline looked at between them (the socket's own
        sendfile waits its timeout once per wait: a reader draining 15 kB/s was never cut)."""
        if self._deadline is None:
            return self._sock.sendfile(file, offset, count)
        if count is None:
            count = os.fstat(file.fileno()).st_size - offset
        sent = 0
        while sent < count:
            size = min(SEND_PIECE, count - sent)
            piece = self._send(self._sock.sendfile, file, offset + sent, size)
            if not piece:
                break
            sent += piece
        return sent

    def __getattr__(self, name):
        return getattr(self._sock, name)


class BalancedThreadWorker(ThreadWorker):
    """gunicorn's ``gthread`` worker, leaving new connections to less busy workers."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._held_until = 0.0  # time.monotonic() until which this worker does not accept
        self._held = False  # the last readiness was held back: accept at the next
        self._waking = False  # a timer will wake the event loop when the hold ends

    def init_process(self) -> None:
        # gthread reads this module constant at each wait, in the worker process (set here,
        # not at import: importing this module changes no other gthread worker)
        gthread.DEFAULT_WORKER_DATA_TIMEOUT = FIRST_DATA_WAIT
        super().init_process()

    def enqueue_req(self, conn) -> None:
        # every request a thread reads goes through here: a new connection's first, and each
        # next one of a kept-alive connection
        if not self.cfg.is_ssl and not isinstance(conn.sock, Deadlined):
            conn.sock = Deadlined(conn.sock)
        super().enqueue_req(conn)

    def accept(self, listener) -> None:
        wait = min(ACCEPT_DELAY * self.nr_conns, MAX_ACCEPT_DELAY)
        if self.cfg.workers > 1 and wait > 0 and not self._held:
            self._held = True
            self._hold(time.monotonic() + wait)
            return
        self._held = False
        super().accept(listener)

    def set_accept_enabled(self, enabled: bool) -> None:
        # the event loop enables accepting on every turn while below worker_connections
        if enabled and time.monotonic() < self._held_until:
            self._wake_at(self._held_until)
            enabled = False
        super().set_accept_enabled(enabled)

    def _hold(self, until: float) -> None:
        """Stop polling the listener until ``until``, then wake the event loop, which polls
        it again (and ``accept`` takes the connection if nobody else did)."""
        self._held_until = until
        super().set_accept_enabled(False)
        self._wake_at(until)

    def _wake_at(self, until: float) -> None:
        if self._waking:
            return
        self._waking = True
        timer = threading.Timer(max(until - time.monotonic(), 0.0) + 0.0005, self._wake)
        timer.daemon = True
        timer.start()

    def _wake(self) -> None:
        self._waking = False
        if not self.alive:  # shutting down: the loop no longer accepts
            return
        with contextlib.suppress(OSError):  # the queue closed as the worker stopped
            self.method_queue.defer(lambda: None)  # the loop's next turn re-enables accept


class JsonLogger(glogging.Logger):
    """gunicorn's logger writing JSON lines (``RECSYS_LOG_FORMAT=json``): its own messages
    (a worker booted, timed out, exited) as the service's lines, and each access line as an
    object with the request under ``http``."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers + self.access_log.handlers:
            handler.setFormatter(JsonLines())

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        headers = dict((name.lower(), value) for name, value in resp.headers)
        http = {
            "method": environ.get("REQUEST_METHOD"),
            "path": _text(environ.get("PATH_INFO")),
            "query": environ.get("QUERY_STRING") or None,
            "status": int(status),
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "remote": environ.get("REMOTE_ADDR"),
            "user_agent": environ.get("HTTP_USER_AGENT"),
        }
        request_id = headers.get(REQUEST_ID_HEADER.lower())
        message = f"{http['method']} {http['path']} {http['status']}"
        try:
            self.access_log.info(message, extra={"http": http, "request_id": request_id})
        except Exception:
            self.exception("writing an access line failed")


def _text(path: str | None) -> str | None:
    """A WSGI path (its bytes as Latin-1, as PEP 3333 passes them) as the UTF-8 text it is:
    "/v1/items/café" was logged as "/v1/items/cafÃ©"."""
    if path is None:
        return None
    try:
        return path.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return path
