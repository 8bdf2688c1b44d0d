"""gunicorn settings for production:

    gunicorn -c services/gunicorn.conf.py "services.app:create_app()"

Every value can be overridden on the command line (``-w 8 -b 0.0.0.0:8000``) or with
``GUNICORN_CMD_ARGS``. The service reads its own settings from ``RECSYS_*`` variables.
"""

import atexit
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from gunicorn import util

from recsys.files import left_by_dead_process


def _remove_dead_masters_folders() -> None:
    """The folders below of masters killed (SIGKILL: no on_exit) on this host: their pid is
    in the name, and a folder whose master is gone is removed (they stayed for good)."""
    for folder in Path(tempfile.gettempdir()).glob("recsys-[ms][eh]*-*-*"):
        if folder.is_dir() and left_by_dead_process(folder.name.split("-")[2]):
            shutil.rmtree(folder, ignore_errors=True)


_remove_dead_masters_folders()
_MASTER = os.getpid()


def _server_folder(variable: str, kind: str) -> tuple[str, bool]:
    """(the folder ``variable`` names, whether this master made it): one made on the first
    read of this file when the variable is unset. gunicorn reads the file again on each HUP:
    the folder is this master's by its pid in the name (a new one was made per HUP, and none
    was removed at exit after one)."""
    prefix = f"recsys-{kind}-{_MASTER}-"
    folder = os.environ.get(variable)
    # another master's own (this file set it in that master's environment): a master that
    # gunicorn re-executes on USR2 inherits it, and stopped at "holds the metrics of another
    # running process"; it makes its own, and the old master removes its own at exit
    made = re.fullmatch(rf"recsys-{kind}-(\d+)-.*", Path(folder).name) if folder else None
    if folder is None or (made and int(made.group(1)) != _MASTER):
        folder = os.environ[variable] = tempfile.mkdtemp(prefix=prefix)
    return folder, Path(folder).name.startswith(prefix)


def _remove_own_folders() -> None:
    """This master's folders, when it exits (a stop, or a start that fails to bind: those
    stayed until the next start); its workers, forked from it, remove nothing."""
    if os.getpid() == _MASTER:
        for folder, own in ((_metrics_dir, _own_metrics_dir), (_shared_dir, _own_shared_dir)):
            if own:
                shutil.rmtree(folder, ignore_errors=True)


# Prometheus multiprocess mode: each worker writes its metrics here; /metrics sums them.
# Must be set before the app (and prometheus_client) is imported by a worker.
# A folder made here is this server's alone and is removed when the master exits.
_metrics_dir, _own_metrics_dir = _server_folder("PROMETHEUS_MULTIPROC_DIR", "metrics")
# What one worker computes for all (catalog-health fits, services/catalog_health.py): a
# folder of this server's alone, removed when the master exits, as the metrics' one.
_shared_dir, _own_shared_dir = _server_folder("RECSYS_SHARED_DIR", "shared")
atexit.register(_remove_own_folders)
# One BLAS/OpenMP thread per worker: workers are the parallelism, threads would fight them.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")


# Settings refused before the settings are read (the log's format is not known yet): the
# first is the server's one line, with the others' (below, in the format asked for).
_refused: list[str] = []


def _whole(name: str, default: int) -> int:
    """A whole number >= 1 from the environment; else the default, and one line naming it
    (not a traceback) stops the server below."""
    text = os.environ.get(name)
    try:
        value = default if text is None else int(text)
    except ValueError:
        value = 0
    if value < 1:
        _refused.append(f"{name}={text!r} must be a whole number >= 1")
        return default
    return value


# One address, or several separated by commas (gunicorn listens on each).
bind = [a.strip() for a in os.environ.get("RECSYS_BIND", "127.0.0.1:8000").split(",") if a.strip()]
# the CPUs this process may run on (taskset, a container's cpuset), not the host's: under
# `taskset -c 0` on a small box the default was still the host's count plus one
workers = _whole("RECSYS_WORKERS", len(os.sched_getaffinity(0)) + 1)
# gthread workers keep connections alive and a slow client holds one thread, not a whole
# worker, and that for a bounded time (services/workers.py, READ_TIMEOUT); at
# 300 req/s on 2 cores they matched sync workers' tail latency (benchmarks/RESULTS.md,
# "HTTP service under load"). BalancedThreadWorker is gthread that leaves each new connection
# to the least busy worker (services/workers.py: plain gthread gives one worker them all).
worker_class = os.environ.get("RECSYS_WORKER_CLASS", "services.workers.BalancedThreadWorker")
threads = _whole("RECSYS_THREADS", 2)
# Workers heartbeat by touching a file per request; on a disk-backed /tmp that is a measurable
# share of a request (5% in py-spy under load), in RAM it is not (gunicorn's own advice).
worker_tmp_dir = os.environ.get("RECSYS_WORKER_TMP_DIR") or (
    "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
)
timeout = 60
graceful_timeout = 30
keepalive = 5
# e.g. "-" for stdout; off by default, and when set empty ("RECSYS_ACCESS_LOG=", which
# stopped gunicorn with "Error: '' isn't writable")
accesslog = os.environ.get("RECSYS_ACCESS_LOG") or None
# gunicorn's text format without its user field (a Basic-auth user name, decoded from a header
# any client sends: "x\n[...] [CRITICAL] ..." wrote a forged line), with the answer's time and
# request id instead (RECSYS_LOG_FORMAT=json writes every field as JSON).
access_log_format = (
    '%(h)s - - %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms %({x-request-id}o)s'
)
# gunicorn's control socket is one path per user (~/.gunicorn/gunicorn.ctl) whatever the bind:
# a second server on the host took it over, and removed it on exit. This service needs none.
control_socket_disable = True
# Requests gunicorn refuses before the app sees them (gunicorn's defaults, stated here): a
# longer request line is a 414, more or longer header fields a 431, in the JSON error shape
# (write_json_error below). A proxy in front has its own limits: keep them at or above these,
# or give it JSON error pages too (README, "Behind a proxy").
limit_request_line = 4094  # bytes of method, path, query and protocol
limit_request_fields = 100
limit_request_field_size = 8190  # bytes of one header line

_HINTS = {
    414: f"the request line (method, path and query) is limited to {limit_request_line} bytes",
    431: f"headers are limited to {limit_request_fields} fields of {limit_request_field_size} "
    "bytes each",
}


def _check_server_settings() -> None:
    """The server's own RECSYS_* settings, each refused in one line naming it: gunicorn's
    answer to a bind port out of range, a missing heartbeat folder, a misspelt worker class
    or a missing metrics folder was a traceback, or every worker failing to boot."""
    for address in bind:
        host, _, port = address.rpartition(":")
        if address.startswith(("unix:", "fd://")):
            continue
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise InvalidSettings(
                f"RECSYS_BIND={','.join(bind)!r}: give HOST:PORT with a port from 0 to 65535, "
                "e.g. 127.0.0.1:8000 or 0.0.0.0:8000 (or unix:/path/to.sock), several "
                "separated by commas"
            )
    folders = {"RECSYS_WORKER_TMP_DIR": worker_tmp_dir, "PROMETHEUS_MULTIPROC_DIR": _metrics_dir}
    for name, folder in folders.items():
        if folder and not (os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)):
            raise InvalidSettings(f"{name}={folder!r} is not a folder this user can write")
    if not _own_metrics_dir:  # the operator's: what other processes left in it
        _forget_dead_workers(_metrics_dir)
        if other := _other_server_in(_metrics_dir):
            raise InvalidSettings(
                f"PROMETHEUS_MULTIPROC_DIR={_metrics_dir!r} holds the metrics of another "
                f"running process ({other}): each server needs a folder of its own (its "
                "/metrics would sum the other's); leave it unset for one per server"
            )
    try:
        util.load_class(worker_class, section="gunicorn.workers")
    except Exception:  # gunicorn raises RuntimeError with a traceback in its text
        raise InvalidSettings(
            f"RECSYS_WORKER_CLASS={worker_class!r} is no gunicorn worker class; leave it unset "
            "(services.workers.BalancedThreadWorker) or name one such as gthread or sync"
        ) from None


def _forget_dead_workers(folder: str) -> None:
    """The live gauges of processes gone from a metrics folder the operator gave (one this
    master made starts empty): a server killed with its workers left theirs, and every later
    start summed them in (``recsys_retrain_due`` stuck at 1, a model version per dead
    worker). Counters and histograms stay: their totals go on."""
    from prometheus_client import multiprocess

    for pid in _writers(folder, "gauge_live*_*.db"):
        if left_by_dead_process(pid):
            multiprocess.mark_process_dead(int(pid), folder)


def _writers(folder: str, pattern: str = "*_*.db") -> list[str]:
    """The pids of the processes whose metrics files (``<kind>_<pid>.db``) match ``pattern``
    in ``folder``, each once."""
    pids = {path.stem.rpartition("_")[2] for path in Path(folder).glob(pattern)}
    return sorted(pid for pid in pids if pid.isdigit())


def _other_server_in(folder: str) -> str | None:
    """The pid of a running process, not this master's worker, whose metrics files are in
    ``folder``; None when there is none (or /proc cannot tell)."""
    for pid in _writers(folder):
        if int(pid) == _MASTER or left_by_dead_process(pid):
            continue
        try:
            parent = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1]
        except (OSError, IndexError):
            continue
        if int(parent) != _MASTER:
            return pid
    return None


def write_json_error(sock, status_int, reason, mesg):
    """gunicorn's own error answers (414, 431, 400 on a malformed request, 500 on its own
    failure) in the service's JSON error shape (services/errors.py) instead of HTML."""
    code = "internal_error" if status_int >= 500 else reason.lower().replace(" ", "_")
    message = "; ".join(filter(None, [mesg, _HINTS.get(status_int)]))
    message = message or "internal error; the server log has details"
    body = json.dumps({"error": {"status": status_int, "code": code, "message": message}})
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, (head + body).encode("latin-1"))
    with contextlib.suppress(Exception):  # counting never stands in the answer's way
        services.metrics.count_refused(status_int)


util.write_error = write_json_error  # the one function every gunicorn worker answers errors with


def on_starting(server):
    """The service's own lines at gunicorn's ``--log-level``."""
    level = logging.getLevelName(server.cfg.loglevel.upper())
    _service_logs(level if isinstance(level, int) else logging.INFO)


def _service_logs(level: int, log_format: str | None = None) -> None:
    """The service's own log lines (``recsys.*``, ``services.*``: a model swap, a refused
    bundle, the catalog away) on stderr with time, pid, level and logger (or as JSON), from
    the master's first line on (its card preload); without this they went through Python's
    last-resort handler, bare, and nothing below a warning was written."""
    for name in ("recsys", "services"):
        logger = logging.getLogger(name)
        if not any(getattr(handler, "_recsys", False) for handler in logger.handlers):
            handler = logging.StreamHandler(sys.stderr)
            # with each line's request id
            services.logs.log_to(handler, log_format or _settings.log_format)
            handler._recsys = True  # once, however often gunicorn reads this file
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


# Import the service's code and libraries once, in the master: workers are forked with those
# pages shared (copy-on-write) instead of each importing its own copy (about 150 MB of a
# worker's private memory). Only modules and the catalog's item cards (read through a
# connection closed before the fork): the app itself, its threads and its connections are
# created in each worker after the fork.
import gc  # noqa: E402

import services.app  # noqa: E402
import services.limits  # noqa: E402
import services.logs  # noqa: E402
import services.metrics  # noqa: E402
import services.workers  # noqa: E402
from recsys.errors import InvalidSettings  # noqa: E402
from recsys.settings import Settings  # noqa: E402

# the settings' own warnings (a misspelt RECSYS_ variable) in the format asked for: in JSON
# too when RECSYS_LOG_FORMAT says json (they were bare text ahead of the JSON lines)
_asked_format = os.environ.get("RECSYS_LOG_FORMAT", "").strip().lower()
_service_logs(logging.INFO, "json" if _asked_format == "json" else "text")
try:  # every RECSYS_* setting, checked before anything starts: one line, not a traceback
    if _refused:
        raise InvalidSettings(_refused[0])
    _settings = Settings.load()
    services.app.flask_config_from_environment()
    services.limits.check_storage(_settings)
    _check_server_settings()
    if _settings.log_format == "json":  # gunicorn's own lines and the access log as JSON too
        logger_class = "services.workers.JsonLogger"
    _service_logs(logging.INFO)  # the lines of the preloads below; on_starting sets the level
    services.app.preload_cards(_settings)  # read once here, the workers share its pages
    services.app.preload_image_libraries(_settings)  # torch, when the bundle has one
except InvalidSettings as exc:
    if _asked_format == "json":  # the last line of a JSON log is JSON too
        logging.getLogger("recsys").critical("%s (the environment)", exc)
        raise SystemExit(1) from None
    raise SystemExit(f"recsys: {exc} (the environment)") from None

gc.collect()
gc.freeze()  # the imported objects leave the collector's lists: collections do not touch them


# How much likelier than the master the kernel's out-of-memory killer takes a worker
# (/proc/PID/oom_score_adj, which a process may raise for itself): a killed worker is
# restarted ("Perhaps out of memory?"), a killed master takes the whole service down. On a
# 1.5 GB box the master, which holds the preloaded libraries, was killed first.
WORKER_OOM_SCORE_ADJ = 300


def post_fork(server, worker):
    try:
        with open("/proc/self/oom_score_adj", "w") as file:
            file.write(str(WORKER_OOM_SCORE_ADJ))
    except OSError:  # not Linux, or /proc read-only: the kernel's own choice stands
        pass


def post_worker_init(worker):
    """The worker has built its app and loaded the model: freeze those objects too, so that
    a full collection walks only what requests leave behind (about 700 objects instead of
    20,000: a pause of under 1 ms instead of 5-15 ms, in which the worker answers nothing)."""
    gc.collect()
    gc.freeze()


def on_exit(server):
    _remove_own_folders()
