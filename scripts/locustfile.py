"""Load for scripts/bench_service.py: product pages ask for similar items, home pages for feeds.

Reads the ids to query from $BENCH_IDS (JSON: {"items": [...], "users": [...]}). Each simulated
client sends a fixed number of requests per second ($BENCH_USER_RPS), so the total rate is
users x rate regardless of latency (an open-loop load, not "as fast as it answers").
"""

import json
import os
import random
from pathlib import Path

from locust import constant_throughput, task
from locust.contrib.fasthttp import FastHttpUser

IDS = json.loads(Path(os.environ["BENCH_IDS"]).read_text())
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
