"""Replays every row of issue 15's table against a demo-sized service and prints what happened.

Builds (once, in --workdir) a small demo shop: `recsys datasets prepare fashion-shop` (real
Fashion-MNIST photos, simulated shoppers), `recsys ingest`, `recsys train`. Each run copies it,
starts gunicorn with services/gunicorn.conf.py (2 workers), and attacks it as an outsider and
as an unlucky operator would: open listings and writes, poisoned ids and values, a PNG pixel
bomb, concurrent first events, a corrupt bundle, a catalog file moved away, `kill -9` of
`recsys train`. It prints one Markdown table row per row of the issue: what was done, what
happened (status codes, rows stored, whether the server stayed up) and a verdict.

A row passes when it ends as the issue asks: a 4xx, a 201 with exactly one row, or a documented
503; it fails on a 500, an acknowledged write that is lost, a training run that crashes, a
server that stays down, or an attack that is simply served. Exit status 1 when any row fails.

Write limits are raised for the run (RECSYS_WRITE_RATE_LIMIT) so the concurrency rows measure
the writes, not the limiter, and /metrics is closed the documented way (RECSYS_PUBLIC_SCOPES
without metrics:read, which is public by default); everything else runs with the defaults.

    .venv/bin/python scripts/attack.py            # about 3-5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recsys.catalog import connect  # noqa: E402
from recsys.catalog.models import Interaction, Item, ModelBundle, User  # noqa: E402

TOKEN = "attack-admin-token-0123456789abcdef"
TRAIN_ARGS = ("train", "--quiet", "--image-time-budget", "3")
PUBLIC_SCOPES = "items:read,feeds:read,search:read"  # the default less metrics:read


# -- the shop and the server ------------------------------------------------------------------
def recsys(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "recsys", *args], env=env, capture_output=True, text=True
    )
    if check and result.returncode not in (0, 1):  # 1: some rows rejected (reported)
        raise SystemExit(f"recsys {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def prepare(workdir: Path, items: int, users: int) -> Path:
    """The pristine shop (catalog.db + artifacts/), built once; returns its folder."""
    shop = workdir / "shop"
    if (shop / "done").exists() and _current_bundles(shop):
        return shop
    shutil.rmtree(shop, ignore_errors=True)
    shop.mkdir(parents=True)
    env = shop_env(shop)
    started = time.perf_counter()
    data = shop / "data"
    recsys(env, "datasets", "prepare", "fashion-shop", "--out", str(data), "--items", str(items),
           "--users", str(users), "--quiet")  # fmt: skip
    recsys(env, "db", "upgrade")
    recsys(env, "ingest", "items", str(data / "items.csv"), "--images-root", str(data), "-q")
    recsys(env, "ingest", "interactions", str(data / "interactions.csv"), "-q")
    recsys(env, *TRAIN_ARGS)
    (shop / "done").touch()
    print(f"demo shop built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return shop


def _current_bundles(shop: Path) -> bool:
    """Whether the built shop's bundles are of the format this code reads (else rebuild)."""
    from recsys.model.bundle import readable

    bundles = [path.parent for path in (shop / "artifacts" / "bundles").glob("*/manifest.json")]
    return bool(bundles) and all(readable(path) for path in bundles)


def shop_env(folder: Path, port: int = 0) -> dict:
    return {**os.environ, "RECSYS_DATABASE_URL": f"sqlite:///{folder / 'catalog.db'}",
            "RECSYS_ARTIFACTS_DIR": str(folder / "artifacts"), "RECSYS_DEVICE": "cpu",
            "RECSYS_ADMIN_TOKEN": TOKEN, "RECSYS_WORKERS": "2",
            "RECSYS_BIND": f"127.0.0.1:{port}", "RECSYS_FLASK_RELOAD_CHECK_SECONDS": "2",
            "RECSYS_WRITE_RATE_LIMIT": "100000/minute",
            "RECSYS_PUBLIC_SCOPES": PUBLIC_SCOPES,
            "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics")}  # fmt: skip


def fresh_copy(shop: Path, run: Path) -> None:
    """The pristine shop copied to ``run``, its registry pointed at the copied bundles."""
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    shutil.copy(shop / "catalog.db", run / "catalog.db")
    shutil.copytree(shop / "artifacts", run / "artifacts")
    (run / "metrics").mkdir()
    engine = connect(f"sqlite:///{run / 'catalog.db'}")
    with Session(engine) as session, session.begin():
        old, new = str((shop / "artifacts").resolve()), str((run / "artifacts").resolve())
        session.execute(update(ModelBundle).values(path=func.replace(ModelBundle.path, old, new)))
    engine.dispose()


class Server:
    """gunicorn over the run's shop, restarted when it dies."""

    def __init__(self, run: Path, port: int):
        self.run, self.env = run, shop_env(run, port)
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def start(self) -> None:
        log = open(self.run / "gunicorn.log", "a")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "services/gunicorn.conf.py",
             "services.app:create_app()"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if not self.wait_ready(180):
            raise SystemExit(f"the service did not start; see {self.run / 'gunicorn.log'}")

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            if status(self.get("/readyz", timeout=5)) == 200:
                return True
            time.sleep(0.5)
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def workers(self) -> list[int]:
        """Worker pids: the master's children."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                pids.append(int(stat.parent.name))
        return sorted(pids)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def get(self, path: str, **kwargs):
        return request("GET", self.url + path, **kwargs)

    def post(self, path: str, **kwargs):
        return request("POST", self.url + path, **kwargs)


def request(method: str, url: str, **kwargs):
    """A response, or the exception that stood in for one (a refused connection, a timeout)."""
    kwargs.setdefault("timeout", 60)
    try:
        return requests.request(method, url, **kwargs)
    except requests.RequestException as exc:
        return exc


def status(response) -> int | str:
    if isinstance(response, Exception):
        return type(response).__name__
    return response.status_code


def statuses(responses) -> str:
    counts = Counter(str(status(r)) for r in responses)
    return ", ".join(f"{code}×{n}" if n > 1 else code for code, n in sorted(counts.items()))


def is_4xx(response) -> bool:
    return isinstance(status(response), int) and 400 <= status(response) < 500


def is_5xx_not_503(response) -> bool:
    code = status(response)
    return not isinstance(code, int) or (code >= 500 and code != 503)


# -- what the attacks share --------------------------------------------------------------------
@dataclass
class Attack:
    server: Server
    key: str  # an events:write key (or the admin token when keys cannot be made)

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}

    def engine(self):
        return connect(self.server.env["RECSYS_DATABASE_URL"])

    def events_of(self, user_id: str) -> int:
        with Session(self.engine()) as session:
            query = select(func.count()).select_from(Interaction).join(User)
            return session.scalar(query.where(User.external_id == user_id))

    def count(self, model) -> int:
        with Session(self.engine()) as session:
            return session.scalar(select(func.count()).select_from(model))

    def item_ids(self, n: int) -> list[str]:
        with Session(self.engine()) as session:
            return list(session.scalars(select(Item.external_id).order_by(Item.id).limit(n)))

    def post_events(self, events: list, auth: bool = True, **kwargs):
        headers = self.auth if auth else {}
        return self.server.post("/v1/interactions", json={"events": events}, headers=headers,
                                **kwargs)  # fmt: skip

    def post_raw(self, body: str):
        headers = {**self.auth, "Content-Type": "application/json"}
        return self.server.post("/v1/interactions", data=body.encode(), headers=headers)


def event(user: str, item: str, **fields) -> dict:
    return {"user_id": user, "item_id": item, "event": "view", **fields}


def train(attack: Attack) -> tuple[bool, str]:
    started = time.perf_counter()
    result = recsys(attack.server.env, *TRAIN_ARGS, check=False)
    seconds = time.perf_counter() - started
    if result.returncode == 0:
        return True, f"`recsys train` ok ({seconds:.0f} s)"
    last = (result.stderr.strip().splitlines() or ["?"])[-1][:160]
    return False, f"`recsys train` FAILED: {last}"


# -- the rows, in the order ------------------------------------------------------------
def open_listing_and_writes(attack: Attack) -> tuple[bool, str]:
    server = attack.server
    listing = server.get("/v1/users?offset=0&limit=100")
    user = "user-00002"
    before = attack.events_of(user)
    items = attack.item_ids(50)
    purchases = [event(user, item, event="purchase") for item in items]
    write = attack.post_events(purchases, auth=False)
    users_before = attack.count(User)
    flood = [event(f"flood-{uuid.uuid4().hex[:8]}", items[0]) for _ in range(1000)]
    many = attack.post_events(flood, auth=False)
    added_events = attack.events_of(user) - before
    added_users = attack.count(User) - users_before
    ok = all(status(r) in (401, 403) for r in (listing, write, many)) and not added_events
    return ok and not added_users, (
        f"GET /v1/users {status(listing)}; 50 purchases for {user} {status(write)} "
        f"({added_events} stored); 1,000 new users in one request {status(many)} "
        f"({added_users} created)"
    )


def nul_user_id_then_train(attack: Attack) -> tuple[bool, str]:
    item = attack.item_ids(1)[0]
    posted = attack.post_events([event("probe\u0000", item)])
    feed = attack.server.get("/v1/users/user-00000%00/recommendations?k=5")
    real = attack.server.get("/v1/users/user-00000/recommendations?k=5")
    same_as_real = (
        status(feed) == 200 and status(real) == 200
        and not feed.json().get("fallback") and feed.json()["items"] == real.json()["items"]
    )  # fmt: skip
    trained, training = train(attack)  # also over every odd row the earlier attacks got in
    ok = (is_4xx(posted) or status(posted) == 201) and not same_as_real and trained
    feed_note = "answered as user-00000" if same_as_real else "not user-00000's feed"
    return ok, (
        f'event for "probe\\u0000" {status(posted)}; /v1/users/user-00000%00/recommendations '
        f"{status(feed)} ({feed_note}); then {training}"
    )


def pixel_bomb(attack: Attack, bomb: bytes) -> tuple[bool, str]:
    server, results, readyz = attack.server, [None] * 6, {}

    def search(n: int) -> None:
        started = time.perf_counter()
        files = {"image": ("bomb.png", bomb, "image/png")}
        results[n] = (server.post("/v1/search/image?k=5", files=files, timeout=120),
                      time.perf_counter() - started)  # fmt: skip

    def probe() -> None:
        time.sleep(0.5)
        started = time.perf_counter()
        readyz["status"] = status(server.get("/readyz", timeout=120))
        readyz["seconds"] = time.perf_counter() - started

    threads = [threading.Thread(target=search, args=(n,)) for n in range(6)]
    threads.append(threading.Thread(target=probe))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    responses = [r for r, _ in results]
    slowest = max(s for _, s in results)
    rss = max((rss_mb(pid) for pid in server.workers()), default=0)
    ok = all(is_4xx(r) or status(r) == 503 for r in responses) and readyz["seconds"] < 5
    return ok, (
        f"{len(bomb) // 1024} KB PNG of 13370×13370 RGBA, 6 at once: {statuses(responses)}, "
        f"slowest {slowest:.1f} s; /readyz meanwhile {readyz['status']} in "
        f"{readyz['seconds']:.1f} s; largest worker afterwards {rss:.0f} MB"
    )


def catalog_moved_and_worker_killed(attack: Attack) -> tuple[bool, str]:
    server = attack.server
    path = Path(server.env["RECSYS_DATABASE_URL"].removeprefix("sqlite:///"))
    writer = Writer(attack)
    writer.start()
    time.sleep(2)
    path.rename(path.with_name("catalog.moved"))  # -wal and -shm stay behind
    time.sleep(1)
    gone = [server.get("/readyz", timeout=10) for _ in range(4)]
    victim = server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    time.sleep(6)
    up_while_gone = server.alive()
    path.with_name("catalog.moved").rename(path)
    ready_again = server.wait_ready(90)
    time.sleep(1)
    writer.stop()
    lost = writer.lost()
    ok = up_while_gone and ready_again and not lost and not writer.server_errors()
    return ok, (
        f"/readyz while gone: {statuses(gone)}; worker {victim} killed: server "
        f"{'stayed up' if up_while_gone else 'WENT DOWN'}; file back: "
        f"{'ready again' if ready_again else 'NOT ready within 90 s'}; writes meanwhile: "
        f"{writer.summary()}; acknowledged but lost: {len(lost)}"
    )


class Writer:
    """Posts one event of a new user at a time until stopped; remembers which got a 201."""

    def __init__(self, attack: Attack):
        self.attack, self.item = attack, attack.item_ids(1)[0]
        self.acked: list[str] = []
        self.responses: list = []
        self.running = True
        self.thread = threading.Thread(target=self.run)

    def start(self) -> None:
        self.thread.start()

    def run(self) -> None:
        n = 0
        while self.running:
            user = f"writer-{uuid.uuid4().hex[:6]}-{n}"
            response = self.attack.post_events([event(user, self.item)], timeout=30)
            self.responses.append(response)
            if status(response) == 201:
                self.acked.append(user)
            else:
                time.sleep(0.05)
            n += 1

    def stop(self) -> None:
        self.running = False
        self.thread.join()

    def lost(self) -> list[str]:
        return [user for user in self.acked if self.attack.events_of(user) != 1]

    def server_errors(self) -> list:
        """5xx but the documented 503; a request the killed worker held gets no answer at all,
        which is no acknowledgement (counted in the summary, not here)."""
        return [r for r in self.responses if is_5xx_not_503(r) and isinstance(status(r), int)]

    def summary(self) -> str:
        return statuses(self.responses)


def concurrent_first_events(attack: Attack) -> tuple[bool, str]:
    items = attack.item_ids(8)
    new_user, identical, bad_rounds = [], [], 0
    for round_ in range(10):
        user = f"newcomer-{uuid.uuid4().hex[:8]}"
        new_user += at_once([[event(user, item)] for item in items], attack)
        stored = attack.events_of(user)
        bad_rounds += stored != sum(1 for r in new_user[-8:] if status(r) == 201)
        twin = f"twin-{uuid.uuid4().hex[:8]}"
        same = event(twin, items[0], timestamp=f"2026-01-0{1 + round_ % 9}T10:00:00Z")
        identical += at_once([[same]] * 8, attack)
        acked = any(status(r) == 201 for r in identical[-8:])
        bad_rounds += attack.events_of(twin) != int(acked)
    responses = new_user + identical
    ok = not bad_rounds and not any(is_5xx_not_503(r) for r in responses)
    return ok, (
        f"first events of a new user, 8 at once ×10: {statuses(new_user)}; one identical "
        f"event 8 at once ×10: {statuses(identical)}; rounds whose rows differ from the "
        f"201s: {bad_rounds}"
    )


def at_once(batches: list[list], attack: Attack) -> list:
    barrier, out = threading.Barrier(len(batches)), [None] * len(batches)

    def send(n: int) -> None:
        barrier.wait()
        out[n] = attack.post_events(batches[n])

    threads = [threading.Thread(target=send, args=(n,)) for n in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def malformed_values(attack: Attack) -> tuple[bool, str]:
    item = attack.item_ids(1)[0]
    base = f'"item_id": "{item}", "event": "view"'
    bodies = {
        "JSON 1,000 deep": '{"events": [' + "[" * 1000 + "]" * 1000 + "]}",
        "weight 1e400 as an integer": f'{{"events": [{{"user_id": "big", {base}, '
        f'"weight": 1{"0" * 400}}}]}}',
        "9999-12-31T23:59:59-14:00": f'{{"events": [{{"user_id": "tz1", {base}, '
        f'"timestamp": "9999-12-31T23:59:59-14:00"}}]}}',
        "0001-01-01T00:00:00+14:00": f'{{"events": [{{"user_id": "tz2", {base}, '
        f'"timestamp": "0001-01-01T00:00:00+14:00"}}]}}',
        '"\\ud800"': f'{{"events": [{{"user_id": "\\ud800", {base}}}]}}',
    }
    return four_xx_and_nothing_stored(attack, bodies)


def four_xx_and_nothing_stored(attack: Attack, bodies: dict[str, str]) -> tuple[bool, str]:
    before = attack.count(Interaction)
    answers = {name: attack.post_raw(body) for name, body in bodies.items()}
    stored = attack.count(Interaction) - before
    ok = all(is_4xx(r) for r in answers.values()) and not stored
    shown = "; ".join(f"{name} {status(r)}" for name, r in answers.items())
    return ok, f"{shown} ({stored} stored)"


def corrupt_bundle_and_restart(attack: Attack) -> tuple[bool, str]:
    server = attack.server
    with Session(attack.engine()) as session:
        folder = Path(session.scalar(select(ModelBundle.path).where(ModelBundle.is_active)))
    target = folder / "item_ids.npy"
    backup = folder.with_name("item_ids.backup")
    shutil.copy(target, backup)
    spoiled = folder / "item_ids.spoiled"
    spoiled.write_bytes(b"corrupt")
    spoiled.replace(target)  # a new file: running workers keep the pages they mapped
    os.kill(server.workers()[0], signal.SIGKILL)
    time.sleep(8)  # the new worker boots on the corrupt bundle
    answers = [server.get(p, timeout=10) for p in ["/readyz", "/v1/items"] * 10]
    leaks = [r for r in answers if not isinstance(r, Exception) and str(ROOT) in r.text]
    backup.replace(target)
    recovered = all_ready(server, 10, 60)
    ok = not leaks and recovered and not any(is_5xx_not_503(r) for r in answers)
    return ok, (
        f"after a worker restart on a corrupt bundle: /readyz and /v1/items {statuses(answers)}; "
        f"bodies showing a file path: {len(leaks)}; bundle restored: "
        f"{'every worker ready' if recovered else 'NOT ready within 60 s'}"
    )


def all_ready(server: Server, in_a_row: int, timeout: float) -> bool:
    deadline, streak = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and streak < in_a_row:
        streak = streak + 1 if status(server.get("/readyz", timeout=10)) == 200 else 0
        time.sleep(0.2)
    return streak >= in_a_row


def like_wildcards(attack: Attack) -> tuple[bool, str]:
    shown, ok = [], True
    for q, encoded in (("%%%", "%25%25%25"), ("___", "___")):  # a search takes 3 characters
        response = attack.server.get(f"/v1/items?q={encoded}&limit=100")
        if status(response) != 200:
            ok &= is_4xx(response)
            shown.append(f"q={q} {status(response)}")
            continue
        page = response.json()
        literal = all(q in (i["title"] or "") for i in page["items"])
        ok &= literal
        shown.append(f"q={q} {page['total']} items{'' if literal else ' (wildcard!)'}")
    return ok, "; ".join(shown)


def kill_train_in_bundle_stage(attack: Attack) -> tuple[bool, str]:
    bundles = Path(attack.server.env["RECSYS_ARTIFACTS_DIR"]) / "bundles"
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys", *TRAIN_ARGS],
        env=attack.server.env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    reached = any("stage bundle" in line for line in proc.stderr)  # stops reading there
    while reached and proc.poll() is None and not leftovers(bundles):
        time.sleep(0.005)  # until the temporary folder appears: then it is writing files
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = leftovers(bundles)
    size = sum(f.stat().st_size for d in left for f in (bundles / d).rglob("*") if f.is_file())
    trained, training = train(attack)
    after = leftovers(bundles)
    gc = recsys(attack.server.env, "bundles", "gc", "--keep", "2", check=False)
    ok = bool(left) and trained and not after and gc.returncode == 0
    when = "while writing the bundle" if left else "NOT while writing (rerun)"
    return ok, (
        f"killed {when}, leaving {len(left)} folder(s) ({size / 1e6:.1f} MB); then "
        f"{training}; left afterwards: "
        f"{', '.join(after) or 'nothing'}; `recsys bundles gc --keep 2` exit {gc.returncode}"
    )


def leftovers(bundles: Path) -> list[str]:
    """Hidden temporary folders and bundles that were never registered."""
    hidden = [p.name for p in bundles.iterdir() if p.name.startswith(".") and p.is_dir()]
    return sorted(hidden + [p.parent.name for p in bundles.glob("*/UNREGISTERED")])


def nan_empty_and_duplicate(attack: Attack) -> tuple[bool, str]:
    server, item = attack.server, attack.item_ids(1)[0]
    nan = attack.post_raw(
        f'{{"events": [{{"user_id": "nan-w", "item_id": "{item}", "event": "view", '
        '"weight": NaN}]}'
    )
    empty_user = f"empty-ts-{uuid.uuid4().hex[:6]}"
    empty = attack.post_events([event(empty_user, item, timestamp="")])
    stamp = empty_timestamp(attack, empty_user)
    twice = attack.post_events(
        [event("dup-w", item, timestamp="2026-01-01T00:00:00Z", weight=w) for w in (1, 5)]
    )
    ks = [server.get(f"/v1/items/{item}/similar?k={k}") for k in ("5_0", "\uff15")]
    empty_ok = is_4xx(empty) or (status(empty) == 201 and stamp == "now")
    ok = is_4xx(nan) and empty_ok and is_4xx(twice) and all(is_4xx(r) for r in ks)
    return ok, (
        f"NaN weight {status(nan)}; empty timestamp {status(empty)} (stored: {stamp}); one "
        f"event twice with weights 1 and 5 {status(twice)}; k=5_0 {status(ks[0])}; "
        f"k=\uff15 {status(ks[1])}"
    )


def empty_timestamp(attack: Attack, user: str) -> str:
    with Session(attack.engine()) as session:
        query = select(Interaction.timestamp).join(User).where(User.external_id == user)
        stamps = list(session.scalars(query))
    if not stamps:
        return "nothing"
    if stamps[0] is None:
        return "NULL"
    age = abs(datetime.now(UTC).replace(tzinfo=None) - stamps[0])  # stored naive UTC
    return "now" if age < timedelta(days=1) else str(stamps[0])


def extreme_years(attack: Attack) -> tuple[bool, str]:
    item = attack.item_ids(1)[0]
    bodies = {}
    for year in ("0001", "9999"):
        stamp = f"{year}-06-01T00:00:00Z"
        bodies[year] = json.dumps({"events": [event(f"year-{year}", item, timestamp=stamp)]})
    return four_xx_and_nothing_stored(attack, bodies)


def gunicorn_limits(attack: Attack) -> tuple[bool, str]:
    host, port = attack.server.url.removeprefix("http://").split(":")
    long_line = b"GET /v1/items?q=" + b"x" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    big_headers = b"GET /v1/items HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 20_000 + b"\r\n\r\n"
    shown, ok = [], True
    for name, raw in (("request line of 5 kB", long_line), ("20 kB header", big_headers)):
        code, content_type, body = raw_exchange(host, int(port), raw)
        shaped = content_type == "application/json" and '"error"' in body
        ok &= code in (414, 431) and shaped
        shown.append(f"{name}: {code} {content_type or '?'}")
    return ok, "; ".join(shown)


def raw_exchange(host: str, port: int, raw: bytes) -> tuple[int, str, str]:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers.get("content-type", ""), body.decode("latin-1")


def open_metrics(attack: Attack) -> tuple[bool, str]:
    anonymous = attack.server.get("/metrics")
    admin = attack.server.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    ok = status(anonymous) in (401, 403) and status(admin) == 200
    return ok, (
        f"with RECSYS_PUBLIC_SCOPES={PUBLIC_SCOPES} (open by default): without credentials "
        f"{status(anonymous)}; with the admin key {status(admin)}"
    )


def first_image_search(attack: Attack, photo: bytes) -> tuple[bool, str]:
    """Right after the server started: each worker's first visual search."""
    times, answers = [], []
    for _ in range(2):
        started = time.perf_counter()
        files = {"image": ("photo.png", photo, "image/png")}
        answers.append(attack.server.post("/v1/search/image?k=5", files=files, timeout=120))
        times.append(time.perf_counter() - started)
    rss = max((rss_mb(pid) for pid in attack.server.workers()), default=0)
    ok = all(status(r) == 200 for r in answers) and max(times) < 3
    return ok, (
        f"first two searches after start: {statuses(answers)} in "
        f"{', '.join(f'{t:.2f} s' for t in times)}; largest worker {rss:.0f} MB"
    )


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# -- inputs -------------------------------------------------------------------------------------
def png_bomb(path: Path, side: int = 13370) -> bytes:
    """A real side×side RGBA PNG of one colour, written row by row (never held decoded)."""
    if path.exists():
        return path.read_bytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    compressor, parts = zlib.compressobj(9), []
    row = b"\x00" + b"\x00" * (side * 4)  # filter byte, then transparent black pixels
    for _ in range(side):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)  # 8-bit RGBA
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
    png += chunk(b"IEND", b"")
    path.write_bytes(png)
    return png


def item_photo(shop: Path) -> bytes:
    from PIL import Image

    first = sorted((shop / "data" / "images").glob("*.png"))[0]
    buffer = io.BytesIO()
    Image.open(first).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def writer_key(env: dict) -> str:
    """An events:write key from `recsys keys create`, or the admin token without that command."""
    result = recsys(env, "keys", "create", "--scope", "events:write", "--name", "attack",
                    check=False)  # fmt: skip
    key = result.stdout.strip().splitlines()[0] if result.returncode == 0 else ""
    return key or TOKEN


# -- the table ------------------------------------------------------------------------------------
@dataclass
class Row:
    severity: str
    done: str
    attack: Callable[[Attack], tuple[bool, str]]
    ok: bool = False
    outcome: str = "not run"


def rows(shop: Path, workdir: Path) -> list[Row]:
    bomb, photo = png_bomb(workdir / "bomb.png"), item_photo(shop)
    return [
        Row("high", "`GET /v1/users` and writes without credentials", open_listing_and_writes),
        Row("high", 'event with user_id `"probe\\u0000"`, then `recsys train`',
            nul_user_id_then_train),
        Row("high", "13370×13370 PNG pixel bomb to `POST /v1/search/image`, 6 at once",
            lambda a: pixel_bomb(a, bomb)),
        Row("high", "SQLite catalog moved away while serving (WAL left), one worker killed",
            catalog_moved_and_worker_killed),
        Row("medium", "8 first events of one new user at once; 8 identical events at once",
            concurrent_first_events),
        Row("medium", 'deep JSON, `1e400` as an integer, extreme zone offsets, `"\\ud800"`',
            malformed_values),
        Row("medium", "corrupt active bundle, then a worker restart", corrupt_bundle_and_restart),
        Row("low", "`q=%` and `q=_` on `GET /v1/items`", like_wildcards),
        Row("low", "`kill -9` of `recsys train` in its bundle stage", kill_train_in_bundle_stage),
        Row("low", "NaN weight; empty timestamp; one event twice with two weights; `k=5_0`, "
            "full-width digits", nan_empty_and_duplicate),
        Row("low", "years 0001 and 9999", extreme_years),
        Row("low", "request line > 4 kB; 20 kB of headers", gunicorn_limits),
        Row("low", "`GET /metrics`", open_metrics),
        Row("low", "first image search per worker", lambda a: first_image_search(a, photo)),
    ]  # fmt: skip


# Run order: the first search right after start; rows that store odd values before the
# training of the NUL row; the destructive rows last.
ORDER = (13, 0, 12, 7, 11, 5, 9, 10, 4, 1, 2, 8, 6, 3)


def run_row(row: Row, attack: Attack) -> None:
    started = time.perf_counter()
    try:
        row.ok, row.outcome = row.attack(attack)
    except Exception as exc:  # the script's own failure shows in the table, the rest go on
        row.ok, row.outcome = False, f"attack script error: {type(exc).__name__}: {exc}"
    server = attack.server
    up = server.alive() and server.wait_ready(60)
    if not up:
        row.ok = False
        row.outcome += "; server DOWN (restarted for the next rows)"
        server.stop()
        server.start()
        server.restarts += 1
    else:
        row.outcome += "; server up"
    print(f"[{time.perf_counter() - started:5.1f} s] {'ok  ' if row.ok else 'FAIL'} "
          f"{row.done}", file=sys.stderr, flush=True)  # fmt: skip


def markdown(table: list[Row]) -> str:
    lines = ["| severity | what was done | what happened | verdict |", "|---|---|---|---|"]
    for row in table:
        outcome = row.outcome.replace("|", "\\|")
        lines.append(f"| {row.severity} | {row.done} | {outcome} | {'ok' if row.ok else 'FAIL'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "attack")
    parser.add_argument("--items", type=int, default=2000, help="demo shop items")
    parser.add_argument("--users", type=int, default=300, help="demo shop shoppers")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    started = time.perf_counter()
    shop = prepare(workdir, args.items, args.users)
    run = workdir / "run"
    fresh_copy(shop, run)
    server = Server(run, args.port)
    attack = Attack(server, writer_key(server.env))
    table = rows(shop, workdir)
    server.start()
    try:
        for index in ORDER:
            run_row(table[index], attack)
    finally:
        server.stop()
    print(markdown(table))
    failed = sum(not row.ok for row in table)
    print(f"\n{len(table) - failed} of {len(table)} rows ok, {failed} failed; "
          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
