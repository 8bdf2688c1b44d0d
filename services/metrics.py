"""Prometheus metrics: requests, latency by endpoint, errors, the model version served,
where read answers came from (``services.answers``), and the live catalog (items kept beside
the bundle, hidden bundle items, whether a retrain is due).

Under gunicorn, ``services/gunicorn.conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` so every
worker's numbers are summed at scrape time (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
import re
import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_CONVERTER = re.compile(r"<[^:<>]+:")  # a route's converter, as in <path:

# The methods counted under their own name; any other a client sends counts as "other", so that
# made-up methods ("AAAA", "AAAB", ...) cannot add a series each to every worker's metrics.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds. Reads answer in milliseconds; event writes behind a locked catalog and photo
# uploads from slow clients take seconds to minutes (a 21 s write fell in +Inf past 5).
LATENCY_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1, 2.5, 5, 10, 30, 60, 120),
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("method", "endpoint", "status")
        self.requests = Counter(
            "recsys_http_requests", "HTTP requests answered", labels, registry=self.registry
        )
        self.errors = Counter(
            "recsys_http_errors", "HTTP answers with status >= 400", labels, registry=self.registry
        )
        self.error_codes = Counter(
            "recsys_http_error_codes",
            "HTTP error answers by the error shape's code (database_unavailable, "
            "model_not_ready, rate_limited ...), which one status can hold several of",
            ("endpoint", "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "recsys_http_request_seconds",
            "Time to answer, by endpoint: from the request read by a worker to its answer (time"
            " waiting for a free worker is not in it)",
            ("method", "endpoint"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model = Gauge(
            "recsys_model_info",
            "1 for the model bundle version a worker serves",
            ("version",),
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.live_items = Gauge(
            "recsys_live_items",
            "New or changed items a worker serves beside its bundle (the live catalog)",
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.live_hidden = Gauge(
            "recsys_live_hidden_items",
            "Bundle items a worker leaves out: removed, out of stock or superseded",
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.live_generation = Gauge(
            "recsys_live_catalog_generation",
            "The catalog's items generation a worker's live catalog is current to",
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.retrain_due = Gauge(
            "recsys_retrain_due",
            "1 when a worker's live catalog is full (RECSYS_LIVE_MAX_ITEMS): run recsys train",
            registry=self.registry,
            # of the live workers: a worker that died while it was due left its 1 for good
            multiprocess_mode="livemax",
        )
        self.refused = Gauge(
            "recsys_active_bundle_refused",
            "1 while a worker cannot load the registry's active bundle and serves an earlier "
            "one (or none; /readyz and the server log say why)",
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.answers = Counter(
            "recsys_answers",
            "Read answers by where they came from: kept (at the generations they were computed"
            " at), carried (kept across follow steps that could not change them) or computed",
            ("endpoint", "source"),
            registry=self.registry,
        )
        self._version: str | None = None
        # Each labelled child by its labels: prometheus_client's labels() checks and locks on
        # every call, a few microseconds three times a request.
        self._children: dict[tuple, object] = {}

    def child(self, metric, *labels: str):
        """``metric.labels(*labels)``, kept after the first call (a child never changes)."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children.setdefault(key, metric.labels(*labels))
        return found

    def answered(
        self,
        method: str,
        endpoint: str,
        status: int,
        seconds: float | None,
        code: str | None = None,
    ) -> None:
        """Count one answer: requests, errors (status >= 400, and by ``code``, the error
        shape's) and, when timed, latency."""
        method = method if method in METHODS else "other"
        labels = (method, endpoint, str(status))
        self.child(self.requests, *labels).inc()
        if status >= 400:
            self.child(self.errors, *labels).inc()
            if code is not None:
                self.child(self.error_codes, endpoint, code).inc()
        if seconds is not None:
            self.child(self.latency, method, endpoint).observe(seconds)

    def model_loaded(self, version: str) -> None:
        if self._version is not None and self._version != version:
            self.model.labels(self._version).set(0)
        self.model.labels(version).set(1)
        self._version = version

    def bundle_refused(self, refused) -> None:
        """After a load: the ``recsys.serving.Refused`` active bundle, or None."""
        self.refused.set(int(refused is not None))

    def live_changed(self, delta) -> None:
        """After a follow step or a load: a ``recsys.model.delta.Delta``."""
        self.live_items.set(delta.size)
        self.live_hidden.set(delta.hides)
        self.live_generation.set(delta.generation)
        self.retrain_due.set(int(delta.retrain_due))

    def exposition(self) -> Response:
        registry = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


_refused: Counter | None = None


REFUSED_STATUSES = (400, 414, 431)  # what gunicorn answers itself, at 0 from the start


def count_refused(status: int | None = None) -> None:
    """Count an answer gunicorn gave before the app saw the request (a malformed request,
    414, 431: ``services/gunicorn.conf.py``'s ``write_json_error``), in the worker's
    multiprocess files beside the app's metrics: they were in no metric at all. None: only
    make the series (at 0: a rate over the first refusals needs them before)."""
    global _refused
    if _refused is None:
        _refused = Counter(
            "recsys_http_refused",
            "Requests the server refused before the app saw them (malformed, 414, 431), by status",
            ("status",),
            registry=None,  # multiprocess mode sums every worker's files whatever the registry
        )
        for known in REFUSED_STATUSES:
            _refused.labels(str(known))
    if status is not None:
        _refused.labels(str(status)).inc()


def init_app(app: Flask, metrics: Metrics) -> None:
    count_refused()  # the refusal series, at 0

    @app.before_request
    def _start_timer():
        g.started = time.perf_counter()

    @app.after_request
    def _record(response):
        asked = request._get_current_object()  # the proxy looked up once
        # the rule without its converters (<path:item_id> -> <item_id>): stable labels
        endpoint = _CONVERTER.sub("<", asked.url_rule.rule) if asked.url_rule else "unmatched"
        started = g.get("started")
        seconds = None if started is None else time.perf_counter() - started
        code = g.get("error_code") if response.status_code >= 400 else None
        metrics.answered(asked.method, endpoint, response.status_code, seconds, code)
        return response
