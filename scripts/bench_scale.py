"""How each cost grows with the shop: prepare, ingest, train (per stage), serve (startup,
memory of the workers, reload), at sizes S, M and L of the synthetic long-tail shop.

    python scripts/bench_scale.py --sizes S            # 100k items, 1M events
    python scripts/bench_scale.py --sizes S --sizes M --results  # ... tables into RESULTS.md
    python scripts/bench_scale.py --sizes L --no-raw --train-limit 3600  # as far as it goes

For each size, in --workdir/SIZE (kept, so a later run can skip what is done with --reuse):

1. ``recsys datasets prepare synthetic-shop --no-images --format parquet`` (timed);
2. ``recsys ingest items`` and ``recsys ingest interactions`` into a fresh SQLite catalog
   (timed, rows/s), then the raw reference of bench_ingest.py: the same interaction rows
   inserted into the same tables of another fresh catalog with plain ``executemany``;
3. ``recsys train --quiet``: the seconds of each stage (from its log lines) and the peak
   resident memory of the process up to the end of each stage (polled every 0.2 s). When
   it fails (say, killed for memory) or passes --train-limit, the tables say in which stage
   and why, and the size is not served;
4. gunicorn with 1 and then 3 gthread workers on that bundle: seconds until ready, each
   worker's RSS, PSS and USS (``/proc/PID/smaps_rollup``), and the seconds of a reload
   (``POST /v1/admin/reload``) answered by one worker;
5. with --load (the default), ``scripts/bench_service.py --existing`` on that bundle: 3
   workers under 300 req/s of similar items and feeds, --load-repeat runs of 60 s with a
   hot reload halfway through each, then as many without one (steady latency); p50/p99
   per endpoint (median of the runs), failed requests and 5xx. Needs ``wrk``.

Prints one JSON document per size and Markdown tables, with the training stage whose time
grows fastest with the events (given two sizes or more); --results appends the tables, the
machine and the load average to benchmarks/RESULTS.md. Sizes: S = 100k items / 10k users /
1M events, M = 1M / 100k / 20M, L = 3M / 300k / 100M (as far as the machine allows).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import click
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
SIZES = {  # items, users, events
    "S": (100_000, 10_000, 1_000_000),
    "M": (1_000_000, 100_000, 20_000_000),
    "L": (3_000_000, 300_000, 100_000_000),
}
TOKEN = "bench-scale-admin-token"
STAGE_LINE = re.compile(r"stage (\w+) \.\.\.")
MB = 2**20


def recsys_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "recsys", *args]


def run_measured(
    command: list[str], env: dict, log_path: Path, limit: float | None = None, check=True
) -> dict:
    """Run ``command``; seconds and peak RSS (MB) in all and per training stage (from its
    ``stage NAME ...`` log lines: the peak up to the end of each stage).

    Stopped (SIGTERM) after ``limit`` seconds. With ``check`` a failed command ends the
    benchmark; without, the result says where it stopped and why (``stopped``: stage, why)."""
    started = time.perf_counter()
    timed_out = False
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.PIPE, text=True
        )
        stages: list[list] = []  # [name, start, peak_mb]
        lock = threading.Lock()

        def follow() -> None:
            for line in process.stderr:
                log.write(line)
                if match := STAGE_LINE.search(line):
                    with lock:
                        stages.append([match.group(1), time.perf_counter(), 0.0])

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        peak = 0.0
        watched = psutil.Process(process.pid)
        while process.poll() is None:
            if limit is not None and not timed_out and time.perf_counter() - started > limit:
                process.terminate()
                timed_out = True
            rss = _tree_rss(watched)
            peak = max(peak, rss)
            with lock:
                if stages:
                    stages[-1][2] = max(stages[-1][2], rss)
            time.sleep(0.2)
        reader.join()
    ended = time.perf_counter()
    failed = process.returncode not in (0, 1)  # ingest exits 1 when some rows were rejected
    if failed and check:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}); see {log_path}")
    per_stage = {}
    running_peak = 0.0
    for i, (name, start, stage_peak) in enumerate(stages):
        end = stages[i + 1][1] if i + 1 < len(stages) else ended
        running_peak = max(running_peak, stage_peak)
        per_stage[name] = {"seconds": round(end - start, 1), "peak_mb": round(running_peak)}
    result = {"seconds": round(ended - started, 1), "peak_mb": round(peak), "stages": per_stage}
    if failed or timed_out:
        stage = stages[-1][0] if stages else "start-up"
        result["stopped"] = {"stage": stage, "why": _why(process.returncode, timed_out, limit)}
    return result


def _why(returncode: int, timed_out: bool, limit: float | None) -> str:
    if timed_out:
        return f"time limit of {limit:g} s"
    if returncode == -signal.SIGKILL:
        return "killed (SIGKILL: the kernel's out-of-memory killer, unless someone else)"
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode} (its log says why)"


def _tree_rss(process: psutil.Process) -> float:
    try:
        processes = [process, *process.children(recursive=True)]
        return sum(p.memory_info().rss for p in processes) / MB
    except psutil.Error:
        return 0.0


def prepare(folder: Path, size: str, env: dict, reuse: bool) -> dict:
    items, users, events = SIZES[size]
    shop = folder / "shop"
    if reuse and (shop / "interactions.parquet").exists():
        return {"seconds": None}
    command = recsys_command("datasets", "prepare", "synthetic-shop", "--out", str(shop))
    command += ["--items", str(items), "--users", str(users), "--events", str(events)]
    command += ["--no-images", "--format", "parquet", "--seed", "0"]
    return run_measured(command, env, folder / "prepare.log")


def ingest(folder: Path, env: dict, reuse: bool, raw: bool = True) -> dict:
    done = folder / "ingest.json"
    if reuse and done.exists():
        return json.loads(done.read_text())
    database = folder / "catalog.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    subprocess.run(recsys_command("db", "upgrade"), env=env, cwd=ROOT, check=True)
    shop = folder / "shop"
    items = run_measured(
        recsys_command("ingest", "items", str(shop / "items.parquet"), "--quiet"),
        env,
        folder / "ingest_items.log",
    )
    events = run_measured(
        recsys_command("ingest", "interactions", str(shop / "interactions.parquet"), "--quiet"),
        env,
        folder / "ingest_events.log",
    )
    n_events = _count(env["RECSYS_DATABASE_URL"], "interactions")
    result = {
        "items": items,
        "events": events,
        "events_stored": n_events,
        "events_per_s": round(n_events / events["seconds"]),
        "raw_seconds": None,
        "ratio_to_raw": None,
    }
    if raw:
        from bench_ingest import raw_sqlite

        reference = folder / "raw.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{reference}{suffix}").unlink(missing_ok=True)
        raw_seconds = raw_sqlite(env["RECSYS_DATABASE_URL"], f"sqlite:///{reference}", 50_000)
        reference.unlink(missing_ok=True)
        result["raw_seconds"] = round(raw_seconds, 1)
        result["ratio_to_raw"] = round(events["seconds"] / raw_seconds, 2)
    done.write_text(json.dumps(result))
    return result


def _count(url: str, table: str) -> int:
    from sqlalchemy import text

    from recsys.catalog import connect

    engine = connect(url)
    with engine.connect() as connection:
        count = connection.scalar(text(f"SELECT count(*) FROM {table}"))
    engine.dispose()
    return int(count)


def train(folder: Path, env: dict, limit: float | None = None) -> dict:
    """``recsys train``'s figures; where it stopped when it fails or passes ``limit``."""
    subprocess.run(recsys_command("db", "upgrade"), env=env, cwd=ROOT, check=True)
    command = recsys_command("train", "--quiet")
    return run_measured(command, env, folder / "train.log", limit=limit, check=False)


def serve(folder: Path, env: dict, workers: int, port: int) -> dict:
    """Startup seconds, per-worker memory and one reload's seconds of a gunicorn server."""
    env = {
        **env,
        "RECSYS_WORKERS": str(workers),
        "RECSYS_THREADS": "2",
        "RECSYS_BIND": f"127.0.0.1:{port}",
        "RECSYS_FLASK_RELOAD_CHECK_SECONDS": "0",
    }
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with open(folder / f"gunicorn_{workers}.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "services/gunicorn.conf.py",
             "services.app:create_app()"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            master = psutil.Process(server.pid)
            _wait_all_ready(url, master, workers)
            startup = time.perf_counter() - started
            for _ in range(20):  # touch the model in every worker
                _get(url + "/v1/items?limit=1")
            memory = [_memory(worker) for worker in master.children()]
            reload_started = time.perf_counter()
            request = urllib.request.Request(
                url + "/v1/admin/reload", method="POST",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )  # fmt: skip
            with urllib.request.urlopen(request, timeout=600):
                pass
            reload_seconds = time.perf_counter() - reload_started
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    return {
        "workers": workers,
        "startup_s": round(startup, 1),
        "reload_s": round(reload_seconds, 1),
        "per_worker_mb": memory,
        "sum_uss_mb": sum(m["uss"] for m in memory),
        "sum_pss_mb": sum(m["pss"] for m in memory),
    }


def load(folder: Path, env: dict, repeat: int, port: int) -> dict:
    """``bench_service.py --existing``'s medians on this size's bundle, with a hot reload
    halfway through each run and without one (``reload`` and ``steady``). A run that fails
    is reported as ``{"failed": why}`` (its log says more) and the next one still runs, so
    what the size measured before it is still printed and tabled."""
    out = {}
    for name, flags in (("reload", []), ("steady", ["--no-reload"])):
        report = folder / f"load_{name}.json"
        report.unlink(missing_ok=True)  # a report left by an earlier run is not this one's
        command = [sys.executable, str(ROOT / "scripts" / "bench_service.py"), "--existing",
                   "--workdir", str(folder), "--repeat", str(repeat), "--port", str(port),
                   "--json", str(report), *flags]  # fmt: skip
        log_path = folder / f"load_{name}.log"
        with open(log_path, "w") as log:
            done = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0 or not report.is_file():
            why = f"bench_service.py exited with status {done.returncode}; see {log_path}"
            print(f"{folder.name}, {name} load run failed: {why}", file=sys.stderr, flush=True)
            out[name] = {"failed": why}
            continue
        found = json.loads(report.read_text())
        out[name] = {"median": found["median"], "server_5xx": found["server_5xx"]}
    return out


def _wait_all_ready(url: str, master: psutil.Process, workers: int, timeout=1800) -> None:
    """Until every worker has loaded the bundle (each answers /readyz once loaded)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(master.children()) == workers and all(
            _get(url + "/readyz") == 200 for _ in range(4 * workers)
        ):
            return
        time.sleep(1)
    raise SystemExit("the service did not become ready; see its log")


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except OSError:
        return 0


def _memory(process: psutil.Process) -> dict:
    info = process.memory_full_info()
    return {name: round(getattr(info, name) / MB) for name in ("rss", "pss", "uss")}


def fastest_growing(results: dict) -> str | None:
    """A line naming the training stage whose time grows fastest with the events, between
    the smallest and the largest size of this run that finished it: the exponent b of
    seconds ∝ events^b (1 is linear). None with fewer than two sizes."""
    growth = {}
    for stage in {s for r in results.values() for s in r["train"]["stages"]}:
        done = [
            (SIZES[size][2], r["train"]["stages"][stage]["seconds"])
            for size, r in results.items()
            if stage in r["train"]["stages"] and _stopped_stage(r["train"]) != stage
        ]
        if len(done) >= 2:
            (small, t_small), (large, t_large) = min(done), max(done)
            growth[stage] = math.log(max(t_large, 0.1) / max(t_small, 0.1)) / math.log(
                large / small
            )
    if not growth:
        return None
    ranked = sorted(growth.items(), key=lambda item: -item[1])
    named = ", ".join(f"{stage} {b:.2f}" for stage, b in ranked)
    return (
        f"Training time ∝ events^b per stage, smallest to largest size: {named}. "
        f"Fastest growing: **{ranked[0][0]}**."
    )


def _stopped_stage(train: dict) -> str | None:
    return train["stopped"]["stage"] if "stopped" in train else None


def _trained(train: dict) -> str:
    if stopped := train.get("stopped"):
        return f"stopped after {train['seconds']} s in {stopped['stage']}: {stopped['why']}"
    return f"{train['seconds']} s"


def markdown(results: dict) -> str:
    lines = [
        "| size | items / events | prepare | ingest items | ingest events (events/s, × raw) "
        "| train | train peak RSS |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, r in results.items():
        items, _, events = SIZES[size]
        ing = r["ingest"]
        lines.append(
            f"| {size} | {items:,} / {events:,} | {r['prepare'].get('seconds')} s "
            f"| {ing['items']['seconds']} s | {ing['events']['seconds']} s "
            f"({ing['events_per_s']:,}/s, {ing['ratio_to_raw'] or 'raw not run'}×) "
            f"| {_trained(r['train'])} | {r['train']['peak_mb']:,} MB |"
        )
    stages = list(dict.fromkeys(s for r in results.values() for s in r["train"]["stages"]))
    lines += ["", "| stage | " + " | ".join(f"{s} s / peak MB" for s in results) + " |"]
    lines.append("| --- |" + " ---: |" * len(results))
    for stage in stages:
        cells = []
        for r in results.values():
            found = r["train"]["stages"].get(stage, {})
            cells.append(f"{found.get('seconds', '–')} / {found.get('peak_mb', '–')}")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    if fastest := fastest_growing(results):
        lines += ["", fastest]
    lines += [
        "",
        "| size | workers | startup | reload (one worker) | RSS per worker | sum PSS | sum USS |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, r in results.items():
        for s in r["serve"]:
            rss = ", ".join(str(m["rss"]) for m in s["per_worker_mb"])
            lines.append(
                f"| {size} | {s['workers']} | {s['startup_s']} s | {s['reload_s']} s "
                f"| {rss} MB | {s['sum_pss_mb']:,} MB | {s['sum_uss_mb']:,} MB |"
            )
    loaded = [(size, r["load"]) for size, r in results.items() if r.get("load")]
    if loaded:
        lines += [
            "",
            "| size | 300 req/s, 3 workers | similar p50 / p99 (range) | feed p50 / p99 (range) "
            "| rate | failed | 5xx |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
    for size, runs in loaded:
        for name, run in runs.items():
            if "failed" in run:
                lines.append(f"| {size} | {_load_name(name)} | failed: {run['failed']} | | | | |")
                continue
            cells = []
            for endpoint in ("similar", "feed"):
                e = run["median"][endpoint]
                low, high = e["p99_ms_range"]
                cells.append(f"{e['p50_ms_median']} / {e['p99_ms_median']} ({low}–{high}) ms")
            rate = sum(e["rps_median"] for e in run["median"].values())
            failed = sum(e["failures"] for e in run["median"].values())
            lines.append(
                f"| {size} | {_load_name(name)} "
                f"| {' | '.join(cells)} | {rate:.0f}/s | {failed} | {run['server_5xx']} |"
            )
    return "\n".join(lines)


def _load_name(name: str) -> str:
    return "a reload in each run" if name == "reload" else "no reload"


@click.command(help=__doc__.split("\n\n")[0])
@click.option(
    "--sizes",
    multiple=True,
    type=click.Choice(list(SIZES)),
    default=["S"],
    show_default=True,
    help="A size to run (repeatable: --sizes S --sizes M).",
)
@click.option(
    "--workdir",
    type=Path,
    default=ROOT / "var" / "bench-scale",
    help="Holds a folder per size [default: var/bench-scale in this checkout].",
)
@click.option("--reuse", is_flag=True, help="Keep prepared shops and ingested catalogs.")
@click.option(
    "--raw/--no-raw",
    default=True,
    show_default=True,
    help="Time the raw-insert reference of the events (as long again as their ingest).",
)
@click.option(
    "--train-limit",
    type=float,
    help="Stop `recsys train` after this many seconds and report the stage it was in "
    "(for L, where the machine may not finish it).",
)
@click.option(
    "--load/--no-load",
    "with_load",
    default=True,
    show_default=True,
    help="Also measure latency under 300 req/s with scripts/bench_service.py (needs wrk).",
)
@click.option(
    "--load-repeat",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Load runs of 60 s with a reload, and as many without.",
)
@click.option("--port", type=int, default=8771, show_default=True, help="The server's port.")
@click.option("--results", is_flag=True, help="Append the tables to benchmarks/RESULTS.md.")
@click.option(
    "--serve-only",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Only the serving figures (1 and 3 workers) of an existing folder holding catalog.db "
    "and artifacts/ with an active bundle (a size folder, or bench_service.py's workdir).",
)
def main(
    sizes,
    workdir: Path,
    reuse: bool,
    raw: bool,
    train_limit: float | None,
    with_load: bool,
    load_repeat: int,
    port: int,
    results: bool,
    serve_only,
) -> None:
    workdir = workdir.resolve()  # the recsys commands run in the checkout
    if with_load and shutil.which("wrk") is None:
        raise click.UsageError(
            "--load drives the service with wrk: apt-get install wrk, or --no-load"
        )
    if serve_only is not None:
        folder = serve_only.resolve()
        env = {**os.environ, "RECSYS_DATABASE_URL": f"sqlite:///{folder / 'catalog.db'}",
               "RECSYS_ARTIFACTS_DIR": str(folder / "artifacts"), "RECSYS_DEVICE": "cpu",
               "RECSYS_ADMIN_TOKEN": TOKEN}  # fmt: skip
        for workers in (1, 3):
            print(json.dumps(serve(folder, env, workers, port)), flush=True)
        if with_load:
            print(json.dumps(load(folder, env, load_repeat, port)), flush=True)
        return
    out = {}
    load_before = os.getloadavg()
    for size in sizes:
        folder = (workdir / size).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "RECSYS_DATABASE_URL": f"sqlite:///{folder / 'catalog.db'}",
               "RECSYS_ARTIFACTS_DIR": str(folder / "artifacts"), "RECSYS_DEVICE": "cpu",
               "RECSYS_ADMIN_TOKEN": TOKEN}  # fmt: skip
        report = {"prepare": prepare(folder, size, env, reuse)}
        report["ingest"] = ingest(folder, env, reuse, raw)
        report["train"] = train(folder, env, train_limit)
        if "stopped" in report["train"]:  # no bundle to serve
            report["serve"] = []
        else:
            report["serve"] = [serve(folder, env, workers, port) for workers in (1, 3)]
            if with_load:
                report["load"] = load(folder, env, load_repeat, port)
        out[size] = report
        print(json.dumps({size: report}), flush=True)
    table = markdown(out)
    print(table)
    if results:
        machine = (
            f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB; load average before "
            f"{load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}"
        )
        command = "python scripts/bench_scale.py" + "".join(f" --sizes {size}" for size in sizes)
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as handle:
            handle.write(f"\n\n### bench_scale ({time.strftime('%Y-%m-%d')}, {machine})\n\n")
            handle.write(f"```\n{command}\n```\n\n{table}\n")


if __name__ == "__main__":
    main()
