"""Private memory (USS) of each gunicorn worker on an existing catalog and bundle, for one
or more checkouts of the code side by side (say, before and after a change).

    .venv/bin/python scripts/bench_worker_uss.py --database-url sqlite:///shop.db \\
        --artifacts-dir ART [--code /tmp/old-checkout] [--workers 3] [--upload PHOTO --uploads 6]

Each checkout's gunicorn (``services/gunicorn.conf.py``, the production command) serves the
catalog's active bundle with ``--workers`` workers; once every worker is ready and has
answered a few product pages, prints each worker's RSS, PSS and USS in MB
(``/proc/PID/smaps_rollup`` via psutil) and the master's, then stops it. This checkout runs
first, then every ``--code``. With ``--upload``, the photo is then sent ``--uploads`` times
to visual search (the bundle needs an image encoder), one request after another, and each
worker's RSS is printed after each (``rss_after_uploads``): what large photos leave behind.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
MB = 2**20


def measure(
    code: Path,
    database_url: str,
    artifacts: Path,
    workers: int,
    port: int,
    photo: Path | None = None,
    uploads: int = 0,
) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "RECSYS_DATABASE_URL": database_url,
        "RECSYS_ARTIFACTS_DIR": str(artifacts),
        "RECSYS_WORKERS": str(workers),
        "RECSYS_BIND": f"127.0.0.1:{port}",
        "RECSYS_FLASK_RELOAD_CHECK_SECONDS": "0",
    }
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "gunicorn", "-c", "services/gunicorn.conf.py",
               "services.app:create_app()"]  # fmt: skip
    server = subprocess.Popen(command, cwd=code, env=env, stderr=subprocess.DEVNULL)
    try:
        master = psutil.Process(server.pid)
        deadline = time.time() + 600
        while not _ready(url, master, workers):
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit(f"{code}: the service did not become ready")
            time.sleep(1)
        items = json.loads(_get(url + "/v1/items?limit=20"))["items"]
        for item in items * workers:  # touch the model and the cards in every worker
            _get(f"{url}/v1/items/{item['item_id']}/similar?k=10")
        time.sleep(1)
        found = {
            "code": str(code),
            "master": _memory(master),
            "workers": [_memory(worker) for worker in master.children()],
        }
        after = []
        for _ in range(uploads if photo is not None else 0):
            _search(url, photo)
            after.append([_memory(worker)["rss"] for worker in master.children()])
        if after:
            found["rss_after_uploads"] = after
        return found
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


def _ready(url: str, master: psutil.Process, workers: int) -> bool:
    if len(master.children()) != workers:
        return False
    try:
        return all(_get(url + "/readyz") for _ in range(4 * workers))
    except OSError:
        return False


def _search(url: str, photo: Path) -> None:
    """POST ``photo`` to visual search as a browser's form does."""
    boundary = "recsysbench"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="{photo.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + photo.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url + "/v1/search/image?k=5",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def _memory(process: psutil.Process) -> dict:
    info = process.memory_full_info()
    return {name: round(getattr(info, name) / MB) for name in ("rss", "pss", "uss")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--artifacts-dir", type=Path, required=True)
    parser.add_argument("--code", type=Path, action="append", default=[])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--port", type=int, default=8890)
    parser.add_argument("--upload", type=Path, help="a photo to send to visual search")
    parser.add_argument("--uploads", type=int, default=6, help="how many times")
    args = parser.parse_args()
    # absolute: each checkout's server runs in its own folder
    url = make_url(args.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        url = url.set(database=str(Path(url.database).expanduser().resolve()))
        args.database_url = url.render_as_string(hide_password=False)
    args.artifacts_dir = args.artifacts_dir.resolve()
    for code in [ROOT, *args.code]:
        found = measure(code.resolve(), args.database_url, args.artifacts_dir, args.workers,
                        args.port, args.upload, args.uploads)  # fmt: skip
        print(json.dumps(found), flush=True)


if __name__ == "__main__":
    main()
