"""The documented production command: gunicorn with several workers over a trained shop."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.shop_fixture import build_shop

ROOT = Path(__file__).resolve().parent.parent
# the README's production command
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "services/gunicorn.conf.py"]
APP = "services.app:create_app()"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_or_none(url: str) -> int | None:
    try:
        return get(url)[0]
    except OSError:
        return None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("gunicorn")
    url, artifacts = build_shop(root)
    port = free_port()
    # no PROMETHEUS_MULTIPROC_DIR: the server makes its own metrics folder under TMPDIR
    env = {**os.environ, "RECSYS_DATABASE_URL": url, "RECSYS_ARTIFACTS_DIR": str(artifacts),
           "RECSYS_DEVICE": "cpu", "RECSYS_WORKERS": "2", "RECSYS_BIND": f"127.0.0.1:{port}",
           "TMPDIR": str(root / "tmp")}  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    (root / "tmp").mkdir()
    log = open(root / "gunicorn.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [*GUNICORN, APP], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while get_or_none(base + "/readyz") != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError((root / "gunicorn.log").read_text()[-3000:])
        time.sleep(0.5)
    yield base, proc, root / "tmp"
    if proc.poll() is None:
        proc.kill()
    log.close()


def test_kept_alive_connections_are_spread_over_the_workers(server):
    # one busy gthread worker would take them all (services/workers.py): its requests queue
    # on one core while the other worker idles
    base, proc, _ = server
    version = json.loads(get(base + "/readyz")[1])["model_version"]
    deadline = time.monotonic() + 60  # both workers polling (a booting one accepts nothing)
    while serving_workers(base, version) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    port = int(base.rsplit(":", 1)[1])
    workers = psutil.Process(proc.pid).children()
    rounds = []
    for _ in range(5):  # plain gthread gives one worker (nearly) all of them in some rounds
        rounds.append(_connections_held(workers, port, 12))
        time.sleep(0.5)  # the workers see the connections close
    assert all(sum(held) == 12 and min(held) >= 4 for held in rounds), rounds


def _connections_held(workers, port: int, n: int) -> list[int]:
    """Open ``n`` kept-alive connections at once, one request each -> how many each worker
    holds."""
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(n)]
    try:
        for connection in connections:
            connection.connect()
        for connection in connections:
            connection.request("GET", "/healthz")
            assert connection.getresponse().read()
        return [
            sum(
                c.laddr.port == port and c.status == "ESTABLISHED" for c in worker.net_connections()
            )
            for worker in workers
        ]
    finally:
        for connection in connections:
            connection.close()


def serving_workers(base: str, version: str) -> int:
    """Live worker processes reporting ``version`` in /metrics (one sample per process)."""
    lines = get(base + "/metrics")[1].decode().splitlines()
    return sum(
        line.startswith("recsys_model_info{") and version in line and line.endswith(" 1.0")
        for line in lines
    )


def test_the_out_of_memory_killer_takes_a_worker_before_the_master(server):
    """On a 1.5 GB box the kernel killed the master first (it holds the preloaded libraries)
    and the service was gone; a killed worker is restarted."""
    _, proc, _ = server

    def adjusted(pid: int) -> int:
        return int(Path(f"/proc/{pid}/oom_score_adj").read_text())

    workers = psutil.Process(proc.pid).children()
    assert workers and all(adjusted(w.pid) > adjusted(proc.pid) for w in workers)


def test_every_gunicorn_worker_serves_the_bundle_and_metrics_count_all_requests(server):
    base, _, _ = server
    version = json.loads(get(base + "/readyz")[1])["model_version"]
    deadline = time.monotonic() + 60  # workers load the bundle one after the other
    while serving_workers(base, version) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert serving_workers(base, version) == 2
    status, body = get(base + "/v1/items")
    item = json.loads(body)["items"][0]["item_id"]
    for _ in range(30):  # a fresh connection each time
        status, body = get(f"{base}/v1/items/{item}/similar?k=3")
        assert status == 200 and len(json.loads(body)["items"]) == 3
    status, body = get(base + "/v1/items/no-such-item/similar")
    assert status == 404 and json.loads(body)["error"]["code"] == "unknown_item"
    lines = get(base + "/metrics")[1].decode().splitlines()
    similar = [
        line for line in lines
        if line.startswith("recsys_http_requests_total")
        and "/v1/items/<item_id>/similar" in line and 'status="200"' in line
    ]  # fmt: skip
    assert len(similar) == 1 and float(similar[0].rsplit(" ", 1)[1]) == 30.0


def raw_request(base: str, request: bytes) -> tuple[int, str, dict]:
    """Send bytes as they are (urllib would refuse them) -> (status, content type, body)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers["content-type"], json.loads(body)


@pytest.mark.parametrize(
    ("request_bytes", "status", "hint"),
    [
        (b"GET /v1/items?q=" + b"x" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "4094"),
        (b"GET /v1/items HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 20_000 + b"\r\n\r\n", 431,
         "8190"),
        (b"NOT A REQUEST\r\n\r\n", 400, ""),
    ],
    ids=["long-request-line", "20kB-header", "malformed"],
)  # fmt: skip
def test_requests_gunicorn_refuses_get_the_json_error_shape(server, request_bytes, status, hint):
    base, _, _ = server
    counted = f'recsys_http_refused_total{{status="{status}"}}'

    def refused() -> float:  # in no metric before: /metrics did not see these
        found = re.search(re.escape(counted) + r" (\S+)", get(base + "/metrics")[1].decode())
        assert found, "the series is there from the start, at 0"
        return float(found.group(1))

    before = refused()
    answer_status, content_type, body = raw_request(base, request_bytes)
    assert (answer_status, content_type) == (status, "application/json")
    assert body["error"]["status"] == status and hint in body["error"]["message"]
    assert get(base + "/healthz")[0] == 200  # and the server carries on
    assert refused() == before + 1


def test_clients_that_send_a_byte_and_hold_do_not_stop_the_service(server):
    """Slowloris: a connection that sent one byte (or its headers and part of its body)
    and held held a request thread for as long as it liked; one per thread (4 here, no
    key needed) and `/healthz` timed out for minutes. Each read now times out (10 s: the
    six here take two rounds of the four threads)."""
    base, _, _ = server
    host, port = base.removeprefix("http://").split(":")
    held = []
    for n in range(6):
        sock = socket.create_connection((host, int(port)), timeout=30)
        part = b"G" if n % 2 else b"POST /v1/users/u1/recommendations HTTP/1.1\r\nHost: x\r\n"
        sock.sendall(part + (b"Content-Length: 100\r\n\r\n{" if n % 2 == 0 else b""))
        held.append(sock)
    try:
        start = time.monotonic()
        while get_or_none(base + "/healthz") != 200:
            assert time.monotonic() - start < 45, "the service stayed stopped"
        for sock in held:  # each cut by the server (an answer, or the connection closed)
            sock.settimeout(30)
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(65536):
                    pass
    finally:
        for sock in held:
            sock.close()


def test_clients_that_keep_their_socket_open_after_the_answer_hold_nothing(server):
    """gunicorn lingers up to 2 s on a connection it closes, on the worker's own loop; the
    read deadlines made each such close wait 10 s, and two clients that read their answer
    and kept the socket open stopped a worker for 10 s each."""
    base, _, _ = server
    host, port = base.removeprefix("http://").split(":")
    held = []
    try:
        for _ in range(4):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            held.append(sock)
        for _ in range(5):
            start = time.monotonic()
            assert get(base + "/healthz")[0] == 200
            assert time.monotonic() - start < 3
    finally:
        for sock in held:
            sock.close()


def test_a_body_in_a_broken_chunked_encoding_is_a_400(server):
    base, _, _ = server
    for chunk in (b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}0\r\n\r\n"):
        request = (
            b"POST /v1/users/u1/recommendations HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n" + chunk
        )
        status, _, body = raw_request(base, request)
        assert (status, body["error"]["code"]) == (400, "bad_request")
        assert "chunked encoding" in body["error"]["message"]
    # a route that reads no body: refused before the view (it answered 200 and did its work,
    # then gunicorn wrote a stray 400 on the connection)
    request = (
        b"DELETE /v1/users/nobody HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"\r\nzz\r\n{}\r\n0\r\n\r\n"
    )
    status, _, body = raw_request(base, request)
    assert (status, body["error"]["code"]) == (400, "bad_request")


def test_gunicorn_stops_cleanly_on_sigterm(server):
    """A HUP (gunicorn reads its config again) makes no new folders, and the master's own
    go with it at the end: each HUP made a metrics and a shared folder, and after one none
    was removed at exit."""
    base, proc, tmp = server
    made = sorted(p.name for p in tmp.iterdir() if p.name.startswith("recsys-"))
    assert [name.split("-")[1] for name in made] == ["metrics", "shared"]
    proc.send_signal(signal.SIGHUP)
    time.sleep(3)
    deadline = time.monotonic() + 120
    while get_or_none(base + "/readyz") != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith("recsys-")) == made
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert not [p for p in tmp.iterdir() if p.name.startswith("recsys-")]  # they go with it


def test_the_services_log_lines_say_when_who_and_what(server):
    """A model load is logged (INFO) with a time, the worker's pid and the logger, once per
    worker; the lines went through Python's last-resort handler, bare, and INFO not at all."""
    _, _, tmp = server
    lines = (tmp.parent / "gunicorn.log").read_text().splitlines()
    loads = [line for line in lines if "serving model bundle" in line]
    pids = [re.search(r"\] \[(\d+)\] \[", line).group(1) for line in loads]
    assert len(pids) == len(set(pids)) >= 2, lines[-20:]  # once per worker (a HUP: new ones)
    assert all(re.match(r"\[\d{4}-\d\d-\d\d [\d:]{8} [+-]\d{4}\] \[\d+\] \[INFO\] recsys", line)
               for line in loads), loads  # fmt: skip


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("RECSYS_DEVICE", "tpu", "device 'tpu' is not one of auto, cpu, cuda, cuda:N"),
        ("RECSYS_WORKERS", "two", "RECSYS_WORKERS='two' must be a whole number >= 1"),
        ("RECSYS_FLASK_RELOAD_CHECK_SECONDS", "abc", "RECSYS_FLASK_RELOAD_CHECK_SECONDS='abc'"),
        ("RECSYS_FLASK_CARD_SNAPSHOT", "3", "RECSYS_FLASK_CARD_SNAPSHOT=3 must be true or false"),
        # each was a traceback, a worker failing to boot, or limits turned off in silence
        ("RECSYS_BIND", "127.0.0.1:99999", "RECSYS_BIND='127.0.0.1:99999': give HOST:PORT"),
        ("RECSYS_WORKER_CLASS", "gthred", "RECSYS_WORKER_CLASS='gthred' is no gunicorn worker"),
        ("RECSYS_WORKER_TMP_DIR", "/no/such/dir", "'/no/such/dir' is not a folder this user"),
        ("RECSYS_RATE_LIMIT_STORAGE", "sqlite:////no/such/dir/x.db", "cannot be used: unable"),
        ("RECSYS_RATE_LIMIT_STORAGE", "bogus://x", "unknown storage scheme"),
        ("RECSYS_DATABASE_URL", "postgres://u:p@h/db", "database_url 'postgres://u:***@h/db'"),
        ("RECSYS_DATABASE_URL", "sqlite:/one/slash.db", "is not a SQLAlchemy URL"),
    ],
)
def test_a_bad_setting_stops_gunicorn_with_one_line_naming_it(tmp_path, name, value, says):
    env = {
        **os.environ,
        "RECSYS_DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}",
        "RECSYS_BIND": f"127.0.0.1:{free_port()}",
        "TMPDIR": str(tmp_path),
        name: value,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run(
        [*GUNICORN, APP], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob("recsys-*-*-*"))  # its folders went with it


def test_a_starting_master_removes_the_folders_of_killed_masters(tmp_path):
    """A master killed with SIGKILL runs no on_exit: its metrics and shared folders stayed in
    /tmp for good (about 30 on a host that runs tests)."""
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    dead = [tmp_path / f"recsys-metrics-{ended}-x1", tmp_path / f"recsys-shared-{ended}-x2"]
    alive = tmp_path / f"recsys-metrics-{os.getpid()}-x3"  # this process: a master running
    for folder in (*dead, alive):
        folder.mkdir()
    config = ROOT / "services" / "gunicorn.conf.py"
    env = {**os.environ, "TMPDIR": str(tmp_path), "RECSYS_DATABASE_URL": "sqlite:///nowhere.db"}
    code = f"import runpy; runpy.run_path({str(config)!r})"
    subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    assert not any(folder.exists() for folder in dead) and alive.exists()


def test_a_master_gunicorn_re_executes_makes_folders_of_its_own(tmp_path):
    """gunicorn's USR2 (a new master from the old one, for a rollout without a gap) always
    failed: the new master inherited the folders this file had set in the old master's
    environment and stopped at "holds the metrics of another running process"."""
    inherited = {
        "PROMETHEUS_MULTIPROC_DIR": tmp_path / f"recsys-metrics-{os.getpid()}-old",
        "RECSYS_SHARED_DIR": tmp_path / f"recsys-shared-{os.getpid()}-old",
    }
    for folder in inherited.values():
        folder.mkdir()
    config = ROOT / "services" / "gunicorn.conf.py"
    env = {**os.environ, "TMPDIR": str(tmp_path), "RECSYS_DATABASE_URL": "sqlite:///nowhere.db"}
    env.update({name: str(folder) for name, folder in inherited.items()})
    code = (
        f"import os, runpy; runpy.run_path({str(config)!r}); e = os.environ; "
        "print(os.getpid(), e['PROMETHEUS_MULTIPROC_DIR'], e['RECSYS_SHARED_DIR'])"
    )
    said = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    pid, metrics, shared = said[-3:]
    assert Path(metrics).name.startswith(f"recsys-metrics-{pid}-")
    assert Path(shared).name.startswith(f"recsys-shared-{pid}-")
    assert all(folder.exists() for folder in inherited.values())  # the old master's, kept


def test_json_logs_carry_each_request_with_its_id(tmp_path):
    """RECSYS_LOG_FORMAT=json: gunicorn's lines, the service's and the access log are one
    JSON object a line, and a request's id (its own X-Request-ID, or a new one) is in its
    answer and its access line."""
    port = free_port()
    env = {
        **os.environ,
        "RECSYS_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",  # not migrated: unready
        "RECSYS_LOG_FORMAT": "json",
        "RECSYS_ACCESS_LOG": "-",
        "RECSYS_WORKERS": "1",
        "RECSYS_BIND": f"127.0.0.1:{port}",
        "TMPDIR": str(tmp_path),
        "RECSYS_DATABSE_URL": "x",  # misspelt: its warning was bare text ahead of the JSON
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with open(tmp_path / "out.log", "w") as out:
        proc = subprocess.Popen([*GUNICORN, APP], cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while get_or_none(base + "/healthz") != 200 and time.monotonic() < deadline:
                time.sleep(0.3)
            given = urllib.request.Request(base + "/readyz", headers={"X-Request-ID": "trace-7"})
            try:
                urllib.request.urlopen(given, timeout=10)
            except urllib.error.HTTPError as exc:
                assert exc.code == 503 and exc.headers["X-Request-ID"] == "trace-7"
            hostile = urllib.request.Request(base + "/healthz", headers={"X-Request-ID": "a b"})
            with urllib.request.urlopen(hostile, timeout=10) as answer:
                made = answer.headers["X-Request-ID"]
            assert re.fullmatch(r"[0-9a-f]{32}", made)  # not the client's text
            assert get_or_none(base + "/v1/items/caf%C3%A9") == 503  # waiting: no catalog
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    lines = [json.loads(line) for line in (tmp_path / "out.log").read_text().splitlines()]
    access = {line["request_id"]: line["http"] for line in lines if "http" in line}
    assert access["trace-7"]["path"] == "/readyz" and access["trace-7"]["status"] == 503
    assert access[made]["status"] == 200 and access[made]["duration_ms"] >= 0
    catalog = [line["message"] for line in lines if line["logger"] == "services.app"]
    assert any(message.startswith("catalog not available at start") for message in catalog)
    assert any(line["logger"] == "gunicorn.error" for line in lines)  # gunicorn's own too
    paths = {entry["path"] for entry in access.values()}
    assert "/v1/items/café" in paths  # as text, not its UTF-8 bytes read as Latin-1
    warned = [line for line in lines if "RECSYS_DATABSE_URL" in line["message"]]
    assert warned and warned[0]["level"] == "WARNING"
    assert "did you mean RECSYS_DATABASE_URL" in warned[0]["message"]


def test_a_metrics_folder_another_running_server_writes_is_refused(tmp_path):
    """Two servers given one PROMETHEUS_MULTIPROC_DIR summed each other's requests and
    showed each other's model version, without a word."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f"counter_{other.pid}.db").write_bytes(b"")
        config = ROOT / "services" / "gunicorn.conf.py"
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "TMPDIR": str(tmp_path),
               "RECSYS_DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}"}  # fmt: skip
        code = f"import runpy; runpy.run_path({str(config)!r})"
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert done.returncode != 0
        assert f"holds the metrics of another running process ({other.pid})" in done.stderr
        (tmp_path / f"counter_{other.pid}.db").unlink()  # a folder of its own: it starts
        dead = [tmp_path / f"{kind}_999999999.db" for kind in ("counter", "gauge_livemax")]
        for path in dead:  # a killed server's workers': their live gauges are forgotten
            path.write_bytes(b"")
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert "another running process" not in done.stderr
        assert [path.exists() for path in dead] == [True, False]
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize(("name", "value"), [("RECSYS_WORKERS", "zero"), ("RECSYS_DEVICE", "tpu")])
def test_a_bad_setting_is_one_json_line_when_the_log_is_json(tmp_path, name, value):
    env = {**os.environ, "RECSYS_DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}",
           "RECSYS_BIND": f"127.0.0.1:{free_port()}", "TMPDIR": str(tmp_path),
           "RECSYS_LOG_FORMAT": "json", name: value}  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run(
        [*GUNICORN, APP], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # each one JSON
    assert lines[-1]["level"] == "CRITICAL" and value in lines[-1]["message"]
