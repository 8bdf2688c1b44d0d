"""Latency and throughput of the HTTP service under concurrent load, with a hot reload.

Builds (once, in --workdir) a synthetic 100k-item catalog with clustered shoppers, ingests it
with `recsys ingest`, trains two bundles with `recsys train`, starts gunicorn with
services/gunicorn.conf.py, and drives similar-items (60%) and home-feed (40%) calls at a fixed
rate. Halfway through each run, the other bundle is activated and POST /v1/admin/reload swaps
it in while the load runs. Prints p50/p99 per endpoint, the rate achieved and the number of
failed requests, for each of --repeat runs and their median.

Two load generators: `wrk` (C; six connections per endpoint, each sending after an
exponentially distributed pause, so arrivals are close to Poisson) and `locust` (Python, open
loop, but it competes with the service for the same cores, which shows in its percentiles).
wrk is `apt-get install wrk`.

    .venv/bin/python scripts/bench_service.py --rate 300 --duration 60 --repeat 3
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-admin-token-0123456789abcdef"


def make_catalog(out: Path, n_items: int, n_users: int, seed: int) -> None:
    """Items with category/brand/price; shoppers who favour 1-2 categories (Zipf within)."""
    rng = np.random.default_rng(seed)
    n_categories = 50
    category = rng.integers(0, n_categories, n_items)
    brand = rng.integers(0, 300, n_items)
    price = np.round(np.exp(rng.normal(3.5, 0.6, n_items)), 2)
    items = pd.DataFrame(
        {
            "item_id": [f"sku-{i:06d}" for i in range(n_items)],
            "title": [f"Item {i} of category {c}" for i, c in enumerate(category)],
            "category": [f"cat-{c:02d}" for c in category],
            "brand": [f"brand-{b:03d}" for b in brand],
            "price": price,
            "in_stock": rng.random(n_items) > 0.05,
        }
    )
    items.to_csv(out / "items.csv", index=False)
    by_category = [np.flatnonzero(category == c) for c in range(n_categories)]
    rows = []
    start = pd.Timestamp("2026-08-01").value // 10**9
    for user in range(n_users):
        tastes = rng.choice(n_categories, size=rng.integers(1, 3), replace=False)
        n = int(rng.integers(5, 45))
        for _ in range(n):
            pool = by_category[rng.choice(tastes)] if rng.random() < 0.85 else np.arange(n_items)
            rank = min(int(rng.zipf(1.3)) - 1, len(pool) - 1)
            event = rng.choice(["view", "click", "purchase"], p=[0.7, 0.25, 0.05])
            rows.append((f"user-{user:05d}", items.item_id[pool[rank]], event,
                         start + int(rng.integers(0, 90 * 86400))))  # fmt: skip
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event", "timestamp"])
    frame.drop_duplicates().to_csv(out / "interactions.csv", index=False)


def recsys(env: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "recsys", *args], env=env, capture_output=True, text=True
    )
    if result.returncode not in (0, 1):  # 1: some rows rejected (reported, not fatal)
        raise SystemExit(f"recsys {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def prepare(workdir: Path, args, env: dict) -> list[str]:
    """Catalog + two bundles (the second inactive); returns the two versions."""
    versions_file = workdir / "versions.json"
    if (workdir / "catalog.done").exists():
        recsys(env, "db", "upgrade")  # a catalog from older code gets the new migrations
    if versions_file.exists() and _current_format(workdir, json.loads(versions_file.read_text())):
        return json.loads(versions_file.read_text())
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "catalog.done").exists():
        started = time.perf_counter()
        make_catalog(workdir, args.items, args.users, args.seed)
        recsys(env, "db", "upgrade")
        recsys(env, "ingest", "items", str(workdir / "items.csv"), "--quiet")
        recsys(env, "ingest", "interactions", str(workdir / "interactions.csv"), "--quiet")
        (workdir / "catalog.done").touch()
        print(f"catalog ready in {time.perf_counter() - started:.0f} s", flush=True)
    versions = []
    for activate in (True, False):
        started = time.perf_counter()
        out = recsys(env, "train", "--quiet", *([] if activate else ["--no-activate"]))
        versions.append(out.split()[1])
        print(f"trained {versions[-1]} in {time.perf_counter() - started:.0f} s", flush=True)
    versions_file.write_text(json.dumps(versions))
    return versions


def _current_format(workdir: Path, versions: list[str]) -> bool:
    """Whether both bundles are of the format this code reads (else: retrain)."""
    from recsys.model.bundle import readable

    return all(readable(workdir / "artifacts" / "bundles" / version) for version in versions)


def write_ids(workdir: Path, n_users: int, seed: int) -> Path:
    rng = np.random.default_rng(seed + 1)
    items = pd.read_csv(workdir / "items.csv", usecols=["item_id"])["item_id"]
    users = [f"user-{u:05d}" for u in rng.integers(0, n_users, 2000)]
    users += [f"visitor-{n}" for n in range(100)]  # unknown users: popularity fallback
    path = workdir / "ids.json"
    path.write_text(json.dumps({"items": items.sample(5000, random_state=seed).tolist(),
                                "users": users}))  # fmt: skip
    return path


def sample_ids(workdir: Path, url: str, seed: int) -> Path:
    """5,000 items and 2,000 users drawn from an existing catalog, plus 100 unknown visitors."""
    from sqlalchemy import text

    from recsys.catalog import connect

    with connect(url).connect() as connection:
        items = connection.execute(text("SELECT external_id FROM items")).scalars().all()
        users = connection.execute(text("SELECT external_id FROM users")).scalars().all()
    rng = np.random.default_rng(seed + 1)
    chosen = {
        "items": rng.choice(items, min(5000, len(items)), replace=False).tolist(),
        "users": rng.choice(users, min(2000, len(users)), replace=False).tolist()
        + [f"visitor-{n}" for n in range(100)],
    }
    path = workdir / "ids.json"
    path.write_text(json.dumps(chosen))
    return path


def check_port_free(port: int) -> None:
    """Refuse a port another process listens on: the load would measure that server (a
    server left by a killed run answered every later run of session 60, whatever code they
    were given)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise SystemExit(
                f"port {port} is in use: stop what listens there (ss -ltnp) or give --port"
            ) from None


def wait_ready(url: str, server: subprocess.Popen | None = None, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server is not None and server.poll() is not None:
            raise SystemExit("the service stopped before it was ready; see its log")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit("the service did not become ready; see its log")


def hot_reload(url: str, env: dict, version: str, delay: float, log: list) -> None:
    time.sleep(delay)
    from recsys.catalog import connect
    from recsys.model.bundle import activate_bundle

    activate_bundle(connect(env["RECSYS_DATABASE_URL"]), version)
    request = urllib.request.Request(
        url + "/v1/admin/reload", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        log.append({"reload": json.loads(response.read()),
                    "seconds": round(time.perf_counter() - started, 2)})  # fmt: skip


ENDPOINTS = {  # name: (share of the requests, path, key of the ids to fill it with)
    "similar": (0.6, "/v1/items/{}/similar?k=10", "items"),
    "feed": (0.4, "/v1/users/{}/recommendations?k=20", "users"),
}
WRK_CONNECTIONS = 6  # per endpoint


def summarize_locust(prefix: Path) -> dict:
    with open(f"{prefix}_stats.csv") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    return {
        name: {
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "rps": round(float(row["Requests/s"]), 1),
            "p50_ms": float(row["50%"]),
            "p99_ms": float(row["99%"]),
            "max_ms": round(float(row["Max Response Time"]), 1),
        }
        for name, row in rows.items()
        if name in ENDPOINTS
    }


def run_locust(args, env: dict, ids: Path, url: str, workdir: Path, seconds: int) -> dict:
    prefix = workdir / "locust"
    users = args.clients
    subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "scripts" / "locustfile.py"),
         "--headless", "-u", str(users), "-r", str(users), "-t", f"{seconds}s",
         "--host", url, "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"],
        env={**env, "BENCH_IDS": str(ids), "BENCH_USER_RPS": str(args.rate / users),
             "BENCH_DIVERSITY": "" if args.diversity is None else f"{args.diversity:g}"},
        check=False,
    )  # fmt: skip
    return summarize_locust(prefix)


def wrk_script(path: Path, paths: list[str], mean_pause_ms: float) -> Path:
    """A wrk Lua script: a random path per request, exponential pauses between requests."""
    lines = ["local paths = {", *(f'  "{p}",' for p in paths), "}"]
    lines += [
        "math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))",
        'request = function() return wrk.format("GET", paths[math.random(#paths)]) end',
        f"delay = function() return -math.log(1 - math.random()) * {mean_pause_ms:.3f} end",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def parse_wrk(output: str) -> dict:
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    if set(percentiles) != {"50", "99"}:
        raise SystemExit(f"wrk gave no latency distribution (no request answered?):\n{output}")
    thread_stats = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", output, re.MULTILINE)
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", output)  # fmt: skip
    failures = (int(bad.group(1)) if bad else 0) + (
        sum(map(int, socket_errors.groups())) if socket_errors else 0
    )
    return {
        "requests": requests,
        "failures": failures,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": round(_ms(percentiles["50"]), 2),
        "p99_ms": round(_ms(percentiles["99"]), 2),
        "mean_ms": round(_ms(thread_stats.group(1)), 2),
        "max_ms": round(_ms(thread_stats.group(3)), 1),
    }


def run_wrk(args, ids: Path, url: str, workdir: Path, answer_ms: dict, seconds: int) -> dict:
    """One wrk per endpoint, all at once. ``answer_ms``: the mean answer time per endpoint,
    taken off each connection's mean pause so that the rate achieved is the rate asked for."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (or use --tool locust)")
    id_lists = json.loads(ids.read_text())
    procs = {}
    for name, (share, template, key) in ENDPOINTS.items():
        per_connection = args.rate * share / WRK_CONNECTIONS  # requests/s
        pause = max(1000 / per_connection - answer_ms.get(name, 0.0), 1.0)
        paths = [template.format(urllib.request.quote(i, safe="")) for i in id_lists[key]]
        if args.diversity is not None:
            paths = [f"{path}&diversity={args.diversity:g}" for path in paths]
        script = wrk_script(workdir / f"wrk_{name}.lua", paths, pause)
        procs[name] = subprocess.Popen(
            ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "--latency",
             "--timeout", "10s", "-s", str(script), url],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
    return {name: parse_wrk(proc.communicate()[0]) for name, proc in procs.items()}


_LABEL = re.compile(r'(\w+)="([^"]*)"')


def server_errors(url: str) -> dict[str, int]:
    """The app's answers with status >= 400 so far, summed over workers, by "METHOD endpoint
    status" (the service's ``recsys_http_errors_total``; gunicorn's own refusals are not in it)."""
    with urllib.request.urlopen(url + "/metrics") as response:
        metrics = response.read().decode()
    counts: dict[str, int] = {}
    for line in metrics.splitlines():
        if line.startswith("recsys_http_errors_total{"):
            labels, value = line.rsplit(" ", 1)
            named = dict(_LABEL.findall(labels))
            key = f"{named['method']} {named['endpoint']} {named['status']}"
            counts[key] = counts.get(key, 0) + round(float(value))
    return counts


def errors_since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What ``server_errors`` counted between two reads (the keys that moved)."""
    moved = {key: n - before.get(key, 0) for key, n in sorted(after.items())}
    return {key: n for key, n in moved.items() if n}


def server_5xx(errors: dict[str, int]) -> int:
    """How many of ``errors`` (a ``server_errors`` count) are server errors."""
    return sum(n for key, n in errors.items() if key.rsplit(" ", 1)[1].startswith("5"))


def median_summary(runs: list[dict]) -> dict:
    """Per endpoint: the median and range of each run's p50 and p99, all failures."""
    out = {}
    for name in ENDPOINTS:
        rows = [run["endpoints"][name] for run in runs]
        p99s = [row["p99_ms"] for row in rows]
        out[name] = {
            "p50_ms_median": statistics.median(row["p50_ms"] for row in rows),
            "p99_ms_median": statistics.median(p99s),
            "p99_ms_range": [min(p99s), max(p99s)],
            "rps_median": statistics.median(row["rps"] for row in rows),
            "failures": sum(row["failures"] for row in rows),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench-service")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=300, help="requests per second in all")
    parser.add_argument("--duration", type=int, default=60, help="seconds of load")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers")
    parser.add_argument(
        "--threads", type=int, default=2, help="threads per worker (>1 means gthread)"
    )
    parser.add_argument(
        "--worker-class",
        default="services.workers.BalancedThreadWorker",
        help="gunicorn worker class (services/gunicorn.conf.py's default; gthread: gunicorn's own)",
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--clients",
        type=int,
        default=10,
        help="concurrent locust clients sharing the rate (--tool locust); many more than the "
        "server's workers mostly measure the load generator (60 clients report ~30 ms for "
        "/healthz)",
    )
    parser.add_argument("--no-reload", action="store_true", help="no hot reload during the load")
    parser.add_argument("--tool", choices=["wrk", "locust"], default="wrk", help="load generator")
    parser.add_argument("--repeat", type=int, default=1, help="load runs against one server")
    parser.add_argument(
        "--warmup",
        type=int,
        default=15,
        help="seconds of load before the measured runs (not counted; with wrk it also measures "
        "the mean answer time that sets the pauses)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--diversity",
        type=float,
        default=None,
        help="MMR λ sent with every request (default: none sent, the service's default)",
    )
    parser.add_argument(
        "--existing",
        action="store_true",
        help="serve the catalog already in --workdir (catalog.db and artifacts/ with an active "
        "bundle, e.g. a size folder of scripts/bench_scale.py) instead of building one; ids "
        "are sampled from it and reloads reload the active bundle",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    env = {**os.environ, "RECSYS_DATABASE_URL": f"sqlite:///{workdir / 'catalog.db'}",
           "RECSYS_ARTIFACTS_DIR": str(workdir / "artifacts"), "RECSYS_DEVICE": "cpu",
           "RECSYS_ADMIN_TOKEN": TOKEN, "RECSYS_FLASK_RELOAD_CHECK_SECONDS": "5",
           "RECSYS_WORKERS": str(args.workers), "RECSYS_THREADS": str(args.threads),
           "RECSYS_WORKER_CLASS": args.worker_class,
           "RECSYS_BIND": f"127.0.0.1:{args.port}"}  # fmt: skip
    from recsys.catalog import connect
    from recsys.model.bundle import activate_bundle, active_version

    if args.existing:
        recsys(env, "db", "upgrade")
        versions = [active_version(connect(env["RECSYS_DATABASE_URL"]))] * 2
        ids = sample_ids(workdir, env["RECSYS_DATABASE_URL"], args.seed)
    else:
        versions = prepare(workdir, args, env)
        activate_bundle(connect(env["RECSYS_DATABASE_URL"]), versions[0])
        ids = write_ids(workdir, args.users, args.seed)
    url = f"http://127.0.0.1:{args.port}"
    runs = []
    check_port_free(args.port)
    with open(workdir / "gunicorn.log", "w") as server_log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "services/gunicorn.conf.py",
             "services.app:create_app()"],
            cwd=ROOT, env=env, stdout=server_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_ready(url, server)
            answer_ms = warm_up(args, env, ids, url, workdir)
            for run in range(args.repeat):
                swap_to = versions[(run + 1) % 2]  # each run reloads to the other bundle
                runs.append(run_load(args, env, ids, url, workdir, swap_to, answer_ms))
                print(json.dumps({"run": run + 1, **runs[-1]}), flush=True)
        finally:
            server.terminate()
            server.wait(30)
    results = {
        "median": median_summary(runs),
        "runs": runs,
        "server_5xx": sum(run["server_5xx"] for run in runs),
        "tool": args.tool,
        "rate_target": args.rate,
        "duration_s": args.duration,
        "reload": not args.no_reload,
        "workers": args.workers,
        "threads": args.threads,
        "diversity": args.diversity,
        "worker_class": args.worker_class,
    }
    print(json.dumps(results["median"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def warm_up(args, env, ids: Path, url: str, workdir: Path) -> dict:
    """Load the service for --warmup seconds (caches, lazy imports); mean answer times."""
    if not args.warmup:
        return {}
    if args.tool == "locust":
        run_locust(args, env, ids, url, workdir, args.warmup)
        return {}
    warm = run_wrk(args, ids, url, workdir, {}, args.warmup)
    return {name: row["mean_ms"] for name, row in warm.items()}


def run_load(args, env, ids: Path, url: str, workdir: Path, swap_to: str, answer_ms: dict) -> dict:
    reload_log: list = []
    reloader = None
    if not args.no_reload:
        reloader = threading.Thread(
            target=hot_reload, args=(url, env, swap_to, args.duration / 2, reload_log)
        )
        reloader.start()
    errors_before = server_errors(url)
    if args.tool == "wrk":
        endpoints = run_wrk(args, ids, url, workdir, answer_ms, args.duration)
    else:
        endpoints = run_locust(args, env, ids, url, workdir, args.duration)
    if reloader is not None:
        reloader.join()
    time.sleep(1)
    errors = errors_since(errors_before, server_errors(url))
    # errors: the app's 4xx and 5xx answers of the run, by "METHOD endpoint status"
    return {"endpoints": endpoints, "server_5xx": server_5xx(errors), "errors": errors,
            "reload": reload_log}  # fmt: skip


if __name__ == "__main__":
    main()
