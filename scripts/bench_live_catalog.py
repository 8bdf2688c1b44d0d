"""The live catalog under load: item writes over HTTP while the service answers reads.

Copies a served catalog (default: the workdir of scripts/bench_service.py, 100k items, and its
active bundle) into --workdir, migrates it, starts gunicorn (--workers 3), drives reads with
wrk at --rate (similar items 60%, feeds 40%, as bench_service.py does) and item writes at
--write-rate from --writers threads. Writes cycle through: PUT a new listing, a near-twin of a
catalog item, with a photo as a multipart part (twice), PATCH in_stock=false on an item that
another item lists among its similar items, DELETE another such item (one
wrk never reads, so that its failed reads count only the service's failures).

Visibility on every worker: each write's answer carries the catalog generation it made; a
monitor scrapes /metrics every --poll seconds, where each worker reports the generation its
live catalog is current to (recsys_live_catalog_generation{pid}); a write is served by a
worker once that worker's generation reaches the write's. ``--monitor files`` reads the same
gauges from the workers' metric files instead (the benchmark sets the server's
PROMETHEUS_MULTIPROC_DIR): each scrape is a request the workers answer by merging every
worker's metric files, a few milliseconds of one of them five times a second, which the
reads under test then wait behind; a Prometheus server scrapes every 15 s or more.

Answers are then checked: after a write is visible everywhere, one similar-items call of its
twin (PUT) or of the item that listed it (PATCH, DELETE) must show (or no longer show) it.

A PUT uploads its twin's own photo when the catalog has one (a re-listing of the same
product), a random one otherwise. With a bundle that has an image block (a catalog with photos,
e.g. ``recsys datasets prepare synthetic-shop``, served with ``--source`` after ``recsys train``
and ``scripts/bench_service.py --existing`` wrote its ids.json) the workers embed each upload;
the benchmark catalog's bundle has none, so its workers store the photos but embed none.
``--encoder DIR`` (a bundle's image_encoder folder, e.g. the demo shop's) then measures what
a worker pays per photo: the run's uploads embedded in batches of
``--embed-batch`` on one thread, as a follow step embeds the photos written in one second.

    .venv/bin/python scripts/bench_live_catalog.py --rate 300 --write-rate 20 --duration 60
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import bench_service as service_bench  # noqa: E402  (its wrk driver and helpers)
import bench_service_time as service_time  # noqa: E402  (its worker-like app)

TOKEN = service_bench.TOKEN
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GENERATION = re.compile(r'^recsys_live_catalog_generation\{pid="(\d+)"\} ([\d.e+]+)$', re.M)


def copy_catalog(source: Path, workdir: Path) -> None:
    """The source's catalog (a consistent copy, WAL included) and its active bundle, the
    registry pointed at the copy; its ids.json (the items wrk reads) when it has one."""
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / "catalog.db"
    target.unlink(missing_ok=True)
    shutil.rmtree(workdir / "images", ignore_errors=True)  # the last run's uploads
    shutil.rmtree(workdir / "artifacts" / "live-blocks", ignore_errors=True)  # and their blocks
    with sqlite3.connect(source / "catalog.db") as src, sqlite3.connect(target) as dst:
        src.backup(dst)
        version, path = dst.execute(
            "SELECT version, path FROM model_bundles WHERE is_active"
        ).fetchone()
        bundle = workdir / "artifacts" / "bundles" / version
        if not bundle.is_dir():
            shutil.copytree(path, bundle)
        dst.execute("UPDATE model_bundles SET path = ? WHERE version = ?", (str(bundle), version))
    if (source / "ids.json").is_file():
        shutil.copy(source / "ids.json", workdir / "ids.json")


def scratch_app(source: Path, work: Path, token: str, follow_seconds: float = 0):
    """The app a gunicorn worker runs, built in this process on a copy of ``source``'s catalog
    and bundle in ``work`` (``copy_catalog``) and frozen as a worker freezes its own
    (``bench_service_time.as_a_worker``), with reload checks off, its follower thread stepping
    every ``follow_seconds`` (0: off), ``token`` as its admin token and no rate limits that a
    benchmark's calls would reach."""
    copy_catalog(source, work)
    (work / "images").mkdir(exist_ok=True)
    os.environ.update(
        RECSYS_DATABASE_URL=f"sqlite:///{work / 'catalog.db'}",
        RECSYS_ARTIFACTS_DIR=str(work / "artifacts"),
        RECSYS_DEVICE="cpu",
        RECSYS_ADMIN_TOKEN=token,
        RECSYS_IMAGES_ROOT=str(work / "images"),
        RECSYS_WRITE_RATE_LIMIT="1000000/minute",
        PROMETHEUS_MULTIPROC_DIR=str(work),
    )
    from services.app import create_app

    app = create_app(
        test_config={"RELOAD_CHECK_SECONDS": 0, "LIVE_CATALOG_SECONDS": follow_seconds}
    )
    return service_time.as_a_worker(app)


@dataclass
class Write:
    op: str  # put, stock, delete
    item: str  # the item written
    probe: str  # the item whose similar items should show (put) or drop (stock, delete) it
    answered: float  # time.time() when the write's answer arrived
    seconds: float  # the write's own latency
    generation: int
    status: int
    checked: bool | None = None  # the answer check after it was visible everywhere (None:
    # not made, its probe had been deleted)


@dataclass
class Monitor:
    """Each worker's live-catalog generation over time: scraped from /metrics, or, with
    ``folder`` (the server's PROMETHEUS_MULTIPROC_DIR), read from the gauge files the
    workers write there. A scrape is a request a worker answers by merging every worker's
    metric files (milliseconds of its interpreter, several times a second); reading the
    gauge files costs the workers nothing."""

    url: str
    poll: float
    folder: Path | None = None
    seen: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            try:
                found = self._generations(session)
            except (requests.RequestException, OSError):
                continue
            now = time.time()
            for pid, value in found:
                history = self.seen.setdefault(pid, [])
                if not history or history[-1][1] != value:
                    history.append((now, value))
            time.sleep(self.poll)

    def _generations(self, session: requests.Session) -> list[tuple[str, int]]:
        """(worker pid, its live catalog's generation) of every worker reporting one."""
        if self.folder is None:
            text = session.get(self.url + "/metrics", timeout=5).text
            return [(pid, int(float(value))) for pid, value in GENERATION.findall(text)]
        from prometheus_client.multiprocess import MultiProcessCollector

        files = [str(path) for path in self.folder.glob("gauge_liveall_*.db")]
        return [
            (sample.labels["pid"], int(sample.value))
            for metric in MultiProcessCollector.merge(files, accumulate=False)
            if metric.name == "recsys_live_catalog_generation"
            for sample in metric.samples
        ]

    def everywhere(self, generation: int) -> float | None:
        """When the last worker reached ``generation`` (None: one never did)."""
        times = []
        for history in self.seen.values():
            reached = [t for t, g in history if g >= generation]
            if not reached:
                return None
            times.append(reached[0])
        return max(times) if times else None


ANSWERS = re.compile(r'^recsys_answers_total\{endpoint="(\w+)",source="(\w+)"\} (\S+)$', re.M)


def answer_counts(url: str) -> dict[tuple[str, str], float]:
    """The service's read answers so far, by endpoint and where they came from (all workers)."""
    text = requests.get(url + "/metrics", timeout=10).text
    return {(endpoint, source): float(value) for endpoint, source, value in ANSWERS.findall(text)}


def answer_shares(before: dict, after: dict) -> dict:
    """Per endpoint, the answers between two ``answer_counts`` by source, and their shares."""
    out: dict[str, dict] = {}
    for (endpoint, source), value in after.items():
        out.setdefault(endpoint, {})[source] = int(value - before.get((endpoint, source), 0))
    for counts in out.values():
        total = sum(counts.values())
        for source in list(counts):
            counts[f"{source}_share"] = round(counts[source] / total, 3) if total else None
    return out


def photo(rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def item_photos(workdir: Path, items: list[str]) -> dict[str, str]:
    """The photo path of each of ``items`` that has one on this machine."""
    with sqlite3.connect(workdir / "catalog.db") as db:
        rows = db.execute("SELECT external_id, image_path FROM items WHERE image_path IS NOT NULL")
        wanted = set(items)
        return {item: path for item, path in rows if item in wanted and Path(path).is_file()}


def similar(session: requests.Session, url: str, item: str, k: int = 10) -> list[str] | None:
    response = session.get(f"{url}/v1/items/{item}/similar?k={k}", timeout=10)
    if response.status_code != 200:
        return None
    return [row["item_id"] for row in response.json()["items"]]


class Writer:
    """One thread of item writes at a fixed mean rate (exponential pauses)."""

    def __init__(
        self,
        number: int,
        url: str,
        rate: float,
        items: list[str],
        seconds: float,
        photos: dict[str, str],
    ):
        self.number, self.url, self.rate, self.items = number, url, rate, items
        self.photos = photos  # item -> its photo's path, where it has one
        self.seconds = seconds
        self.rng = np.random.default_rng(1000 + number)
        self.session = requests.Session()
        self.writes: list[Write] = []
        self.failed = 0
        self.done: set[str] = set()
        # The items wrk reads (ids.json): a DELETE never picks one, so a product page wrk asks
        # for is never a correct 404, and wrk's failed reads count only the service's failures.
        self.read = frozenset(items)

    def run(self) -> None:
        end = time.time() + self.seconds
        step = 0
        while time.time() < end:
            started = time.time()
            op = ("put", "put", "stock", "delete")[step % 4]
            try:
                getattr(self, op)()
            except requests.RequestException:
                self.failed += 1
            step += 1
            pause = self.rng.exponential(1 / self.rate) - (time.time() - started)
            time.sleep(max(pause, 0))

    def put(self) -> None:
        twin = str(self.rng.choice(self.items))
        card = self.session.get(f"{self.url}/v1/items/{twin}", timeout=10).json()
        name = f"live-{self.number}-{len(self.writes)}"
        fields = {"title": card["title"], "attributes": card["attributes"]}
        own = self.photos.get(twin)
        image = (Path(own).name, Path(own).read_bytes()) if own else ("p.png", photo(self.rng))
        files = {"item": (None, json.dumps(fields)), "image": image}
        self._send("put", name, twin, "put", files=files)

    def stock(self) -> None:
        self._remove("stock", "patch", json={"in_stock": False})

    def delete(self) -> None:
        self._remove("delete", "delete")

    def _remove(self, op: str, method: str, **body) -> None:
        probe = str(self.rng.choice(self.items))
        listed = similar(self.session, self.url, probe) or []
        targets = [i for i in listed if i not in self.done and not i.startswith("live-")]
        if op == "delete":
            targets = [i for i in targets if i not in self.read]
        if not targets:
            return
        self._send(op, targets[0], probe, method, **body)

    def _send(self, op: str, item: str, probe: str, method: str, **body) -> None:
        started = time.perf_counter()
        response = self.session.request(
            method, f"{self.url}/v1/items/{item}", headers=AUTH, timeout=30, **body
        )
        seconds = time.perf_counter() - started
        if response.status_code != 200:
            self.failed += 1
            print(f"{method} {item}: {response.status_code} {response.text[:200]}", flush=True)
            return
        self.done.add(item)
        generation = response.json()["generation"]
        self.writes.append(
            Write(op, item, probe, time.time(), seconds, generation, response.status_code)
        )


def check(url: str, writes: list[Write], monitor: Monitor, wait: float) -> None:
    """After each write is visible everywhere, one similar-items call on its probe."""
    session = requests.Session()
    for write in writes:
        deadline = time.time() + wait
        while monitor.everywhere(write.generation) is None and time.time() < deadline:
            time.sleep(0.05)
        response = session.get(f"{url}/v1/items/{write.probe}/similar?k=10", timeout=10)
        found = [row["item_id"] for row in response.json().get("items", [])]
        if response.status_code == 404:  # the probe was deleted since by another writer
            write.checked = None
        elif response.status_code != 200:
            write.checked = False
        elif write.op == "put":
            write.checked = write.item in found
        else:
            write.checked = write.item not in found


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def summarize(writes: list[Write], monitor: Monitor, seconds: float) -> dict:
    out = {"writes": len(writes), "writes_per_s": round(len(writes) / seconds, 2)}
    for op in ("put", "stock", "delete"):
        rows = [w for w in writes if w.op == op]
        lags = []
        never = 0
        for write in rows:
            at = monitor.everywhere(write.generation)
            if at is None:
                never += 1
            else:
                lags.append(max(at - write.answered, 0.0))
        out[op] = {
            "count": len(rows),
            "visible_everywhere_p50_s": percentile(lags, 50),
            "visible_everywhere_p99_s": percentile(lags, 99),
            "visible_everywhere_max_s": round(max(lags), 3) if lags else None,
            "never_visible": never,
            "write_p50_ms": percentile([w.seconds * 1000 for w in rows], 50),
            "write_p99_ms": percentile([w.seconds * 1000 for w in rows], 99),
            "answer_check_passed": sum(w.checked is True for w in rows),
            "answer_check_failed": sum(w.checked is False for w in rows),
            "answer_check_probe_gone": sum(w.checked is None for w in rows),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/tmp/bench-service"))
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench-live")
    parser.add_argument("--rate", type=float, default=300, help="reads per second (wrk)")
    parser.add_argument("--write-rate", type=float, default=20, help="item writes per second")
    parser.add_argument("--writers", type=int, default=4, help="write threads")
    parser.add_argument("--duration", type=int, default=60, help="seconds of load")
    parser.add_argument("--warmup", type=int, default=15, help="seconds of reads first")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between scrapes")
    parser.add_argument(
        "--monitor",
        choices=("http", "files"),
        default="http",
        help="how the workers' generations are watched: GET /metrics every --poll seconds "
        "(each a request the workers answer), or their metric files read beside the server",
    )
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--reuse", action="store_true", help="keep --workdir's catalog copy")
    parser.add_argument("--encoder", type=Path, help="an image_encoder folder to time (above)")
    parser.add_argument("--embed-batch", type=int, default=20, help="photos per follow step")
    parser.add_argument(
        "--diversity",
        type=float,
        default=None,
        help="MMR λ sent with every read (default: none sent, the service's default)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    if not (args.reuse and (workdir / "catalog.db").exists()):
        copy_catalog(args.source.resolve(), workdir)
    env = {**os.environ, "RECSYS_DATABASE_URL": f"sqlite:///{workdir / 'catalog.db'}",
           "RECSYS_ARTIFACTS_DIR": str(workdir / "artifacts"), "RECSYS_DEVICE": "cpu",
           "RECSYS_ADMIN_TOKEN": TOKEN, "RECSYS_IMAGES_ROOT": str(workdir / "images"),
           "RECSYS_WRITE_RATE_LIMIT": "100000/minute",
           "RECSYS_WORKERS": str(args.workers), "RECSYS_THREADS": str(args.threads),
           "RECSYS_BIND": f"127.0.0.1:{args.port}"}  # fmt: skip
    if args.monitor == "files":  # the workers' metric files, where the monitor reads them
        shutil.rmtree(workdir / "metrics", ignore_errors=True)
        (workdir / "metrics").mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(workdir / "metrics")
    service_bench.recsys(env, "db", "upgrade")
    ids_path = workdir / "ids.json"
    items = json.loads(ids_path.read_text())["items"]
    url = f"http://127.0.0.1:{args.port}"
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with open(workdir / "gunicorn.log", "w") as server_log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "services/gunicorn.conf.py",
             "services.app:create_app()"],
            cwd=ROOT, env=env, stdout=server_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            results = run(args, url, workdir, ids_path, items, server.pid)
        finally:
            server.terminate()
            server.wait(30)
    results["loadavg_before"] = load_before
    results["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    if args.encoder is not None:
        results["embedding"] = time_embedding(args.encoder, workdir / "images", args.embed_batch)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def time_embedding(encoder_dir: Path, images: Path, batch: int) -> dict:
    """Photos per second one worker thread embeds, in follow-step batches."""
    import torch

    from recsys.vision import ImageEncoder

    torch.set_num_threads(1)
    encoder = ImageEncoder.load(encoder_dir, device="cpu")
    paths = sorted(str(path) for path in images.rglob("*.png"))
    if not paths:
        return {"photos": 0}
    encoder.transform(paths[:batch])  # warm
    started = time.perf_counter()
    for start in range(0, len(paths), batch):
        encoder.transform(paths[start : start + batch])
    seconds = time.perf_counter() - started
    return {
        "photos": len(paths),
        "batch": batch,
        "photos_per_s_one_thread": round(len(paths) / seconds, 1),
        "ms_per_photo": round(seconds / len(paths) * 1000, 3),
        "encoder": str(encoder_dir),
    }


CHILDREN = resource.RUSAGE_CHILDREN  # wrk's runs, once each has ended


def _cpu(usage) -> float:
    return usage.ru_utime + usage.ru_stime


def server_cpu(pid: int) -> float:
    """CPU seconds the server (its master and workers) has used so far."""
    master = psutil.Process(pid)
    total = 0.0
    for process in [master, *master.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:  # a worker gone meanwhile
            continue
        total += times.user + times.system
    return total


def worker_rss_mb(pid: int) -> list[float]:
    """Resident memory (MB) of each of the server's workers, largest first."""
    sizes = []
    for process in psutil.Process(pid).children(recursive=True):
        try:
            sizes.append(round(process.memory_info().rss / 2**20, 1))
        except psutil.Error:  # a worker gone meanwhile
            continue
    return sorted(sizes, reverse=True)


def run(args, url: str, workdir: Path, ids_path: Path, items: list[str], server_pid: int) -> dict:
    service_bench.wait_ready(url)
    ready = json.loads(urllib.request.urlopen(url + "/readyz").read())
    warm = service_bench.run_wrk(args, ids_path, url, workdir, {}, args.warmup)
    answer_ms = {name: row["mean_ms"] for name, row in warm.items()}
    errors_before = service_bench.server_errors(url)
    photos = item_photos(workdir, items)
    monitor = Monitor(url, args.poll, workdir / "metrics" if args.monitor == "files" else None)
    watcher = threading.Thread(target=monitor.run, daemon=True)
    watcher.start()
    writers = [  # --write-rate 0: the same reads without writes (a baseline)
        Writer(n, url, args.write_rate / args.writers, items, args.duration, photos)
        for n in range(args.writers if args.write_rate > 0 else 0)
    ]
    threads = [threading.Thread(target=w.run) for w in writers]
    answers_before = answer_counts(url)
    cpu_before, started = server_cpu(server_pid), time.perf_counter()
    own_before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, CHILDREN)]
    for thread in threads:
        thread.start()
    reads = service_bench.run_wrk(args, ids_path, url, workdir, answer_ms, args.duration)
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    cpu = (server_cpu(server_pid) - cpu_before) / seconds
    answers = answer_shares(answers_before, answer_counts(url))
    own = [
        (_cpu(resource.getrusage(who)) - _cpu(before)) / seconds
        for who, before in zip((resource.RUSAGE_SELF, CHILDREN), own_before, strict=True)
    ]
    writes = sorted((w for writer in writers for w in writer.writes), key=lambda w: w.answered)
    check(url, writes, monitor, wait=10.0)
    errors = service_bench.errors_since(errors_before, service_bench.server_errors(url))
    monitor.stop.set()
    watcher.join()
    return {
        "reads": reads,
        "live": summarize(writes, monitor, args.duration),
        "write_failures": sum(writer.failed for writer in writers),
        "server_5xx": service_bench.server_5xx(errors),
        # the app's 4xx and 5xx answers from the load's start to the answer checks' end (wrk's
        # reads, the writers', the monitor's and the checks' calls), by "METHOD endpoint status"
        "errors": errors,
        "workers_seen": len(monitor.seen),
        "ready_at_start": ready,
        "ready_at_end": json.loads(urllib.request.urlopen(url + "/readyz").read()),
        "rate_target": args.rate,
        "monitor": args.monitor,
        "diversity": args.diversity,
        "write_rate_target": args.write_rate,
        "duration_s": args.duration,
        # CPU (cores) while writers and reads ran: the server's, this script's (writers,
        # monitor) and wrk's, all on one machine
        "server_cpu_cores": round(cpu, 3),
        "writers_cpu_cores": round(own[0], 3),
        "wrk_cpu_cores": round(own[1], 3),
        # each worker's resident memory once the answers were checked, largest first
        "worker_rss_mb": worker_rss_mb(server_pid),
        # the read answers of the measured minute (wrk's and the writers'), by where they came
        # from: kept at their generations, carried across follow steps, or computed
        "answers": answers,
    }


if __name__ == "__main__":
    main()
