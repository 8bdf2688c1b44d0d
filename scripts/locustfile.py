"""Load for scripts/bench_service.py: product pages ask for similar items, home pages for feeds.

Reads the ids to query from $BENCH_IDS (JSON: {"items": [...], "users": [...]}). Each simulated
client sends a fixed number of requests per second ($BENCH_USER_RPS, default 30), so the
total rate is users x rate regardless of latency (an open-loop load, not "as fast as it
answers"). $BENCH_DIVERSITY, when set, is sent as every request's diversity.

It is a locust file, not a script: `scripts/bench_service.py --tool locust` runs it, or
    BENCH_IDS=WORKDIR/ids.json locust -f scripts/locustfile.py --host http://127.0.0.1:PORT
with WORKDIR a bench_service.py workdir (its ids.json) and PORT its server's.
"""

import json
import os
import random
import sys
from pathlib import Path

if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.strip())
        raise SystemExit(0)
    raise SystemExit(
        "scripts/locustfile.py is a locust file, not a script: scripts/bench_service.py"
        " --tool locust runs it (or BENCH_IDS=WORKDIR/ids.json locust -f scripts/locustfile.py)"
    )
if not os.environ.get("BENCH_IDS"):
    raise SystemExit(
        "scripts/locustfile.py needs BENCH_IDS, the path of a bench_service.py workdir's"
        " ids.json: scripts/bench_service.py --tool locust sets it"
    )

from locust import constant_throughput, task
from locust.contrib.fasthttp import FastHttpUser

try:
    IDS = json.loads(Path(os.environ["BENCH_IDS"]).read_text())
except (OSError, ValueError) as error:
    raise SystemExit(
        f"scripts/locustfile.py: BENCH_IDS={os.environ['BENCH_IDS']}: {error}"
    ) from None
RATE = float(os.environ.get("BENCH_USER_RPS", "30"))
# MMR λ sent with every request ($BENCH_DIVERSITY), or none: the service's default.
EXTRA = f"&diversity={os.environ['BENCH_DIVERSITY']}" if os.environ.get("BENCH_DIVERSITY") else ""


class Shopper(FastHttpUser):
    wait_time = constant_throughput(RATE)

    @task(3)
    def similar_items(self):
        item = random.choice(IDS["items"])
        self.client.get(f"/v1/items/{item}/similar?k=10{EXTRA}", name="similar")

    @task(2)
    def home_feed(self):
        user = random.choice(IDS["users"])
        self.client.get(f"/v1/users/{user}/recommendations?k=20{EXTRA}", name="feed")
