"""CPU time one gunicorn worker spends per request, by endpoint: deterministic where latency
percentiles on a shared machine are not.

    python scripts/bench_request_cpu.py --workdir /tmp/bench-service [NAME=VALUE ...]

Starts one gthread worker over the catalog and active bundle of a `scripts/bench_service.py`
workdir (extra NAME=VALUE pairs go into its environment, e.g.
RECSYS_FLASK_CARD_CACHE_ITEMS=0), then for /healthz, similar items and feeds sends 1,500
sequential keep-alive requests twice (the first pass warms up) and prints the worker's CPU
seconds (user + system) and the wall time per request.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import click
import psutil

ROOT = Path(__file__).resolve().parent.parent


@click.command()
@click.option(
    "--workdir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=ROOT / "var" / "bench-service",
    help="A scripts/bench_service.py workdir: its catalog.db, artifacts/ and ids.json"
    " [default: var/bench-service in this checkout].",
)
@click.option(
    "--port", type=int, default=8797, show_default=True, help="The worker's port on 127.0.0.1."
)
@click.option(
    "--requests",
    "n",
    type=int,
    default=1500,
    show_default=True,
    help="Requests per endpoint and pass (a warm-up pass, then a measured one).",
)
@click.argument("overrides", nargs=-1, metavar="[NAME=VALUE]...")
def main(workdir: Path, port: int, n: int, overrides: tuple[str, ...]) -> None:
    """CPU time one gunicorn worker spends per request, by endpoint.

    Starts one gthread worker over the catalog and active bundle of a
    scripts/bench_service.py workdir, then for /healthz, similar items and feeds sends
    --requests sequential keep-alive requests twice (the first pass warms up) and prints the
    worker's CPU milliseconds (user + system) and the wall time per request.

    NAME=VALUE pairs are put in the worker's environment, over the script's own settings
    (e.g. RECSYS_FLASK_CARD_CACHE_ITEMS=0).
    """
    bad = [pair for pair in overrides if "=" not in pair or pair.startswith("=")]
    if bad:
        raise click.BadParameter(f"{bad[0]!r} is not NAME=VALUE", param_hint="NAME=VALUE")
    workdir = workdir.resolve()
    env = {**os.environ, "RECSYS_DATABASE_URL": f"sqlite:///{workdir / 'catalog.db'}",
           "RECSYS_ARTIFACTS_DIR": str(workdir / "artifacts"), "RECSYS_DEVICE": "cpu",
           "RECSYS_WORKERS": "1", "RECSYS_THREADS": "2", "RECSYS_BIND": f"127.0.0.1:{port}",
           "RECSYS_FLASK_RELOAD_CHECK_SECONDS": "5"}  # fmt: skip
    env.update(pair.split("=", 1) for pair in overrides)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "services/gunicorn.conf.py",
         "services.app:create_app()"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        connection = _ready(port)
        worker = psutil.Process(server.pid).children()[0]
        ids = json.loads((workdir / "ids.json").read_text())
        rng = random.Random(0)
        paths = {
            "healthz": lambda: "/healthz",
            "similar": lambda: f"/v1/items/{rng.choice(ids['items'])}/similar?k=10",
            "feed": lambda: f"/v1/users/{rng.choice(ids['users'])}/recommendations?k=20",
        }
        for name, path in paths.items():
            for label in ("warm-up", "measured"):
                cpu, wall = sum(worker.cpu_times()[:2]), time.perf_counter()
                for _ in range(n):
                    connection.request("GET", path())
                    response = connection.getresponse()
                    response.read()
                    if response.status != 200:
                        raise SystemExit(f"{path()} answered {response.status}")
                cpu = sum(worker.cpu_times()[:2]) - cpu
                wall = time.perf_counter() - wall
                if label == "measured":
                    per = 1e3 / n
                    print(f"{name:8s} CPU {cpu * per:.2f} ms/request, wall {wall * per:.2f} ms")
    finally:
        server.terminate()
        server.wait(30)


def _ready(port: int, timeout: float = 300) -> http.client.HTTPConnection:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/readyz")
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                return connection
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the worker did not become ready")


if __name__ == "__main__":
    main()
