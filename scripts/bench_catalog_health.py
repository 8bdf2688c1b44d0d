"""The catalog-health page's first load on a served catalog: what it costs the host and the
shoppers.

Copies a catalog and its active bundle (``--source``: a folder with ``catalog.db``, e.g. a
shop prepared, ingested and trained with ``recsys``) into ``--workdir``, so that nothing an
earlier run computed is kept, and starts gunicorn (``--workers``, services/gunicorn.conf.py)
on it from the code tree ``--root`` (default: this one; a worktree of an older commit measures
that commit). Then ``--admins`` operators open the /catalog page at the same moment: each
sends the page's three requests at once (duplicates, outliers, clusters, as
``static/catalog.js`` does), and follows a 202 answer (still computing) after its
Retry-After, until all three are answered. Meanwhile a shopper asks for one item's similar
items every ``--probe-every`` seconds.

Reported: each operator's time to the whole page, the answers by status, the CPU seconds the
workers spent, the shopper's latency during the load (p50, p99, max) and its failures; then
the same page opened again (answers kept), and with another ``limit`` of duplicate sets.

    .venv/bin/python scripts/bench_catalog_health.py --source SHOP --workdir /tmp/health
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_live_catalog as live_bench  # its catalog copy
import bench_service as service_bench  # its readiness wait and token

ROOT = Path(__file__).resolve().parents[1]
AUTH = {"Authorization": f"Bearer {service_bench.TOKEN}"}
PAGE = (
    "/v1/admin/catalog/duplicates?threshold={threshold}&limit={limit}",
    "/v1/admin/catalog/outliers?top=24",
    "/v1/admin/catalog/clusters",
)


def copy_catalog(source: Path, workdir: Path) -> str:
    """A fresh ``workdir`` with a copy of the source's catalog and active bundle
    (``bench_live_catalog.copy_catalog``), so that nothing an earlier run computed is kept ->
    an item id of the catalog."""
    shutil.rmtree(workdir, ignore_errors=True)
    live_bench.copy_catalog(source, workdir)
    with sqlite3.connect(workdir / "catalog.db") as catalog:
        return catalog.execute("SELECT external_id FROM items ORDER BY id LIMIT 1").fetchone()[0]


def get(url: str, headers: dict | None = None, timeout: float = 3600) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def answered(url: str, statuses: list[int]) -> bytes:
    """The answer of ``url``, following 202 (still computing) after its Retry-After."""
    while True:
        status, headers, body = get(url, AUTH)
        statuses.append(status)
        if status != 202:
            if status != 200:
                raise SystemExit(f"{url}: {status} {body[:300]!r}")
            return body
        time.sleep(float(headers.get("Retry-After", 1)))


def open_page(base: str, limit: int, threshold: float) -> dict:
    """One operator opening the page: its three requests at once -> time and statuses."""
    statuses: list[int] = []
    start = time.perf_counter()
    paths = [base + p.format(threshold=threshold, limit=limit) for p in PAGE]
    with ThreadPoolExecutor(len(paths)) as pool:
        list(pool.map(lambda url: answered(url, statuses), paths))
    return {"seconds": round(time.perf_counter() - start, 2), "statuses": statuses}


def probe(url: str, every: float, stop: threading.Event, out: list) -> None:
    """A shopper's similar-items reads; one unanswered within 30 s counts as status 0."""
    while not stop.is_set():
        start = time.perf_counter()
        try:
            status, _, _ = get(url, timeout=30)
        except OSError:  # timed out, refused
            status = 0
        out.append((status, (time.perf_counter() - start) * 1000))
        stop.wait(every)


def worker_cpu(master: psutil.Process) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in master.children())


def sitting(base: str, master: psutil.Process, args, item: str, limit: int) -> dict:
    """``--admins`` operators open the page at once while a shopper reads similar items."""
    stop, probes = threading.Event(), []
    shopper = threading.Thread(
        target=probe, args=(f"{base}/v1/items/{item}/similar", args.probe_every, stop, probes)
    )
    cpu, start = worker_cpu(master), time.perf_counter()
    shopper.start()
    with ThreadPoolExecutor(args.admins) as pool:
        pages = list(pool.map(lambda _: open_page(base, limit, args.threshold), range(args.admins)))
    stop.set()
    shopper.join()
    latencies = np.array([ms for _, ms in probes])
    statuses = [s for page in pages for s in page["statuses"]]
    return {
        "wall_s": round(time.perf_counter() - start, 2),
        "page_s": [page["seconds"] for page in pages],
        "answers": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "worker_cpu_s": round(worker_cpu(master) - cpu, 1),
        "shopper": {
            "requests": len(probes),
            "failed": sum(s != 200 for s, _ in probes),
            "over_1s": int((latencies > 1000).sum()),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "p99_ms": round(float(np.percentile(latencies, 99)), 1),
            "max_ms": round(float(latencies.max()), 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="folder with catalog.db")
    parser.add_argument("--workdir", type=Path, required=True, help="emptied, then written")
    parser.add_argument("--root", type=Path, default=ROOT, help="code tree that serves")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--admins", type=int, default=3, help="operators opening the page")
    parser.add_argument(
        "--threshold", type=float, default=0.95, help="duplicates' threshold (the page's)"
    )
    parser.add_argument("--probe-every", type=float, default=0.1, help="shopper's pause, s")
    parser.add_argument("--port", type=int, default=8131)
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    # absolute: the server runs in --root, and gets the workdir's paths
    args.source, args.workdir, args.root = (
        p.resolve() for p in (args.source, args.workdir, args.root)
    )

    item = copy_catalog(args.source, args.workdir)
    env = {
        **os.environ,
        "RECSYS_DATABASE_URL": f"sqlite:///{args.workdir / 'catalog.db'}",
        "RECSYS_ARTIFACTS_DIR": str(args.workdir / "artifacts"),
        "RECSYS_ADMIN_TOKEN": service_bench.TOKEN,
        "RECSYS_DEVICE": "cpu",
        "RECSYS_WORKERS": str(args.workers),
        "RECSYS_BIND": f"127.0.0.1:{args.port}",
        "PYTHONPATH": str(args.root),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    base = f"http://127.0.0.1:{args.port}"
    with open(args.workdir / "gunicorn.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "services/gunicorn.conf.py",
             "services.app:create_app()"],
            cwd=args.root, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            service_bench.wait_ready(base)
            master = psutil.Process(server.pid)
            results = {"first": sitting(base, master, args, item, limit=50)}
            print(json.dumps({"first": results["first"]}), flush=True)
            results["again"] = sitting(base, master, args, item, limit=50)
            results["another_limit"] = sitting(base, master, args, item, limit=10)
        finally:
            server.terminate()
            server.wait(60)
    results |= {"workers": args.workers, "admins": args.admins, "root": str(args.root)}
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
