"""Log replay through the served path: held-out events sent, in time order, to a running
service, scored from what it answered.

Two passes over the same events (``replay``):

1. **feeds**: before each event, ask for the user's feed; nothing is posted, so every answer
   comes from the bundle alone. This pass must agree with ``offline_feeds``, the same
   per-event scoring of the same bundle in-process (``Recommender.recommend``).
2. **posting** (``ReplayConfig.post``): before each event, ask for the user's feed and, when
   the event follows another of the same user, the previous item's similar items; then post
   the event, so the next feed folds it in (``recsys.serving.home_feed``). Its feed figures
   against pass 1 are what folding in fresh events adds. The service stores the events:
   replay against a catalog that does not hold them yet (``write_split`` writes the parts).

Each answer is scored against the event's item: next-event hit rate@k (the item is listed)
and MRR@k (1 / its rank), through ``recsys.model.ranking.per_user_metrics`` with one held-out
item per event. The service's bundle must have been trained on the split's training part only;
otherwise the held-out items count as seen and are never listed.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import numpy as np
import pandas as pd
from tqdm import tqdm

from recsys.errors import InvalidInput, TryAgain
from recsys.model.data import INTERACTION_COLUMNS
from recsys.model.ranking import per_user_metrics
from recsys.model.split import sample_users, split_interactions

log = logging.getLogger(__name__)

# A request whose connection dropped, was refused or timed out, or that a gateway answered
# 502, 503 or 504 (a proxy, a restarting service), is sent again after 0.5 s, 1 s, 2 s...
# (or the answer's Retry-After), RETRIES times: three tries within the same second, then
# all the replay's work lost, was all a restarting service got.
RETRIES = 5
BACKOFF = 0.5
PASSING = (502, 503, 504)
# Seconds one wait may last, whatever Retry-After asks; 429s (the write limit) wait at most
# RATE_WAITS times.
LONGEST_WAIT = 60.0
RATE_WAITS = 30


@dataclass(frozen=True)
class ReplayConfig:
    # Length of every list asked for and cut-off of the metrics.
    k: int = 10
    # Also run the pass that posts each event after asking (it writes to the service's catalog).
    post: bool = True
    # MMR λ sent with every request; None: the service's default.
    diversity: float | None = None
    # Sent as "Authorization: Bearer KEY" (feeds:read, items:read, events:write).
    api_key: str | None = None
    # Seconds one request may take (a loaded development server can stall for a while).
    timeout: float = 120.0


class ServiceClient:
    """JSON over one keep-alive HTTP connection to the service at ``url``."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(f"--service {url!r}: give the service's URL, e.g. http://host:8000")
        connection = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self._connection = connection(parts.hostname, parts.port, timeout=timeout)
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | str]:
        """(status, the JSON body, or its text when it is not JSON); see ``RETRIES`` (safe:
        reads, and events are stored once). ``TryAgain`` once the service stayed away."""
        payload = None if body is None else json.dumps(body)
        for attempt in range(RETRIES + 1):
            wait = BACKOFF * 2**attempt
            try:
                status, answer, retry_after = self._send(method, path, payload)
            except (OSError, http.client.HTTPException) as exc:
                self._connection.close()
                problem = f"no answer from the service ({exc})"
            else:
                if status not in PASSING:
                    return status, answer
                problem = f"the service answered {status}: {_message(answer)}"
                wait = retry_after or wait
            if attempt < RETRIES:
                log.warning("%s %s: %s; trying again in %.1f s", method, path, problem, wait)
                time.sleep(min(wait, LONGEST_WAIT))
        raise TryAgain(
            f"{method} {path}: {problem}, {RETRIES + 1} times; check that the service is up "
            "and run the command again"
        )

    def _send(self, method: str, path: str, payload: str | None):
        """One request -> (status, body, Retry-After seconds or None); a 429 (the service's
        write limit) waits its Retry-After and is sent again, ``RATE_WAITS`` times at most."""
        for _ in range(RATE_WAITS):
            self._connection.request(method, self._prefix + path, payload, self._headers)
            response = self._connection.getresponse()
            data = response.read()
            retry_after = _seconds(response.getheader("Retry-After"))
            if response.status != 429:
                break
            wait = retry_after or 1.0
            log.warning(
                "%s %s: rate limited; waiting %.0f s (raise the service's limit)",
                method,
                path,
                wait,
            )
            time.sleep(min(wait, LONGEST_WAIT))
        return response.status, _decode(data), retry_after

    def get(self, path: str) -> dict:
        status, body = self.request("GET", path)
        if status != 200 or not isinstance(body, dict):
            raise InvalidInput(f"GET {path}: the service answered {status}: {_message(body)}")
        return body


def _decode(data: bytes) -> dict | str:
    """The JSON body, or its text: a proxy's 502 page is HTML (it was a JSONDecodeError)."""
    text = data.decode("utf-8", errors="replace")
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return text


def _seconds(retry_after: str | None) -> float | None:
    """A Retry-After in seconds (an HTTP date, or none: None)."""
    try:
        return max(0.0, float(retry_after))
    except (TypeError, ValueError):
        return None


def _message(body) -> str:
    """The service's error message, else what the body holds, on one line: a proxy's
    {"error": "injected"} was an AttributeError."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    text = body if isinstance(body, str) else json.dumps(body)
    return " ".join(text.split())[:200] or "an empty body"


# -- events ---------------------------------------------------------------------------------


def write_split(data, config, out_dir: Path) -> dict[str, Path]:
    """The split ``recsys evaluate`` makes (``config``: an EvaluationConfig) as two
    ingestable files, ``train.csv`` (ingest it into the catalog the service trains on) and
    ``heldout.csv`` (replay it) -> their paths."""
    interactions = data.interactions
    if config.users is not None:
        interactions = sample_users(interactions, config.users, config.seed)
    split = split_interactions(
        interactions, config.split, config.holdout, config.seed, config.cutoff
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"train": out_dir / "train.csv", "heldout": out_dir / "heldout.csv"}
    for name, frame in (("train", split.train), ("heldout", split.test)):
        tmp = paths[name].with_name(f".{paths[name].name}.tmp")
        frame[INTERACTION_COLUMNS].to_csv(tmp, index=False)
        tmp.rename(paths[name])
    return paths


def read_events(path: Path, users: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Events to replay (a CSV or Parquet file with user_id, item_id and timestamp; event and
    weight optional) in time order; ``users``: a seeded sample of that many users."""
    try:
        frame = pd.read_parquet(path) if str(path).endswith(".parquet") else _read_csv(path)
    except pd.errors.EmptyDataError:  # a 0-byte file: pandas' traceback, exit 1
        frame = pd.DataFrame()
    if frame.empty:  # a header alone was replayed to a report of "(model None)", then a KeyError
        raise InvalidInput(f"--events {path} holds no events; give the held-out file to replay")
    missing = {"user_id", "item_id", "timestamp"} - set(frame.columns)
    if missing:
        raise InvalidInput(f"--events {path}: missing column(s) {', '.join(sorted(missing))}")
    frame = frame.astype({"user_id": str, "item_id": str})
    stamps = frame["timestamp"]
    if pd.api.types.is_numeric_dtype(stamps):  # epoch seconds, as ingest reads them (not ns)
        frame["timestamp"] = pd.to_datetime(stamps, unit="s", utc=True)
    else:
        frame["timestamp"] = pd.to_datetime(stamps, utc=True, format="mixed")
    if frame["timestamp"].isna().any():
        raise InvalidInput(f"--events {path}: every event needs a timestamp (replay is in order)")
    if users is not None:
        frame = sample_users(frame, users, seed)
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _read_csv(path: Path) -> pd.DataFrame:
    """Ids as their text: pandas' guesses made "00123" user 123, "1e5" 100000.0 and "NaN"
    no id at all, so the split ``write_split`` wrote could not be replayed as it was."""
    return pd.read_csv(
        path,
        dtype={"user_id": str, "item_id": str, "event": str},
        keep_default_na=False,
        na_values={"event": [""], "weight": [""], "timestamp": [""]},
    )


# -- the passes -----------------------------------------------------------------------------


def replay(events: pd.DataFrame, url: str, config: ReplayConfig, show_progress: bool = False):
    """Pass 1 (feeds) and, with ``config.post``, pass 2 (posting) -> the replay section."""
    client = ServiceClient(url, config.api_key, config.timeout)
    section = {"service": url, "events": len(events), "users": int(events["user_id"].nunique())}
    section["k"] = config.k
    if config.post:
        _check_posting(client)
    section["unknown"] = _unknown_items(client, events, show_progress)  # before any is posted
    section["feeds"] = _pass(client, events, config, post=False, show_progress=show_progress)
    section["model_version"] = section["feeds"].pop("model_version")
    section["unknown"]["user_events"] = section["feeds"].pop("fallback_events")
    if config.post:
        section["posting"] = _pass(client, events, config, post=True, show_progress=show_progress)
        section["posting"].pop("model_version")
    return section


def _check_posting(client: ServiceClient) -> None:
    """Say now, not after the feeds pass, when the service will not take this replay's
    events: the service checks the key before the body, so an empty batch is answered 401 or
    403 for a key that cannot post and 400 (nothing stored) for one that can."""
    status, answer = client.request("POST", "/v1/interactions", {"events": []})
    if status in (401, 403):
        raise InvalidInput(
            f"--api-key: the service will not take the posting pass's events: "
            f"{_message(answer)} (give a key with scope events:write, or --no-post)"
        )


def _pass(
    client: ServiceClient,
    events: pd.DataFrame,
    config: ReplayConfig,
    post: bool,
    show_progress: bool,
):
    """Ranks (0: not listed) of each event's item in the answers of one pass, scored; the
    posting pass also counts the events the service did not store, by reason."""
    feed_ranks, similar_ranks, previous, version = [], [], {}, None
    rejected: dict[str, int] = {}
    fallback = 0
    extra = "" if config.diversity is None else f"&diversity={config.diversity}"
    label = "replay (posting)" if post else "replay (feeds)"
    rows = events.itertuples(index=False)
    for event in tqdm(rows, total=len(events), desc=label, unit="event", disable=not show_progress):
        user, item = str(event.user_id), str(event.item_id)
        feed = client.get(f"/v1/users/{quote(user, safe='')}/recommendations?k={config.k}{extra}")
        version = feed["model_version"]
        fallback += bool(feed.get("fallback"))  # the bundle does not know the user
        feed_ranks.append(_rank(item, feed["items"]))
        if post and user in previous:
            similar_ranks.append(_similar_rank(client, previous[user], item, config.k, extra))
        if post and (reason := _post(client, event)):
            rejected[reason] = rejected.get(reason, 0) + 1
        previous[user] = item
    out = {"model_version": version, **_feed_scores(feed_ranks, events, config.k)}
    if post:
        out["similar"] = _scores([r for r in similar_ranks if r is not None], config.k)
        out["rejected"] = dict(sorted(rejected.items()))
    else:
        out["fallback_events"] = fallback
    return out


def _unknown_items(client: ServiceClient, events: pd.DataFrame, show_progress: bool) -> dict:
    """Events of items the service's catalog does not hold, and of items it holds that its
    bundle does not know (no training events), asked once per item: replay scored them with
    nothing said. None for both when the key may not read items."""
    missing, unmodelled = set(), set()
    items = events["item_id"].astype(str)
    for item in tqdm(items.unique(), desc="replay (items)", unit="item", disable=not show_progress):
        status, body = client.request("GET", f"/v1/items/{quote(item, safe='')}")
        if status in (401, 403):
            log.warning("the key may not read items (items:read): unknown items not counted")
            return {"item_events_not_in_catalog": None, "item_events_not_in_model": None}
        if status == 404:
            missing.add(item)
        elif status != 200 or not isinstance(body, dict):
            raise InvalidInput(f"item {item!r}: the service answered {status}: {_message(body)}")
        elif not body.get("in_model"):
            unmodelled.add(item)
    return {
        "item_events_not_in_catalog": int(items.isin(missing).sum()),
        "item_events_not_in_model": int(items.isin(unmodelled).sum()),
    }


def unknown_said(section: dict) -> str:
    """How many replayed events are of users or items the served bundle does not know, in
    one sentence."""
    unknown = section["unknown"]
    users = f"{unknown['user_events']:,} of users the served bundle does not know"
    said = [f"{users} (no training history: their feeds are the most popular items)"]
    if unknown["item_events_not_in_catalog"] is None:
        said.append("items not counted (the key may not read items: items:read)")
    else:
        said.append(
            f"{unknown['item_events_not_in_catalog']:,} of items not in the service's catalog"
        )
        said.append(
            f"{unknown['item_events_not_in_model']:,} of items in it that the bundle does not "
            "know (no training events)"
        )
    return f"Of the {section['events']:,} events, " + "; ".join(said) + "."


def _similar_rank(client: ServiceClient, previous: str, item: str, k: int, extra: str):
    """Rank of ``item`` among the previous item's similar items; None when the model does
    not know the previous item (a 404: not scored)."""
    status, body = client.request(
        "GET", f"/v1/items/{quote(previous, safe='')}/similar?k={k}{extra}"
    )
    if status == 404:
        return None
    if status != 200 or not isinstance(body, dict):
        raise InvalidInput(
            f"similar items of {previous!r}: the service answered {status}: {_message(body)}"
        )
    return _rank(item, body["items"])


def _post(client: ServiceClient, event) -> str | None:
    """Post one event -> None, or why the service did not store it. An event of an item
    removed from the service's catalog (or never in it), or of a shopper erased, stopped the
    pass with the earlier events already posted and no report: it is left out, counted."""
    body = {
        "user_id": str(event.user_id),
        "item_id": str(event.item_id),
        "timestamp": event.timestamp.isoformat(),
    }
    for name in ("event", "weight"):
        value = getattr(event, name, None)
        if value is not None and not pd.isna(value):
            body[name] = value.item() if isinstance(value, np.generic) else value
    status, answer = client.request(
        "POST", "/v1/interactions?skip_rejected=true", {"events": [body]}
    )
    if status != 201 or not isinstance(answer, dict):
        raise InvalidInput(f"posting {body}: the service answered {status}: {_message(answer)}")
    rejected = answer.get("rejected")
    return rejected[0]["reason"] if rejected else None


# What each reason of a left-out event means for a replay.
REJECTED = {
    "unknown_item": "an item not in the service's catalog: removed since, or never ingested",
    "erased_user": "a shopper erased from it",
}


def not_stored(counts: dict[str, int]) -> str:
    """The events the posting pass's service did not store, by reason, in one sentence
    ("" when it stored them all)."""
    if not counts:
        return ""
    said = [
        f"{reason} {n:,}" + (f" ({REJECTED[reason]})" if reason in REJECTED else "")
        for reason, n in counts.items()
    ]
    return (
        f"The service did not store {sum(counts.values()):,} of the posted events, "
        f"{', '.join(said)}: they were scored, but no later feed folds them in."
    )


# The in-process and served feeds-only figures are equal on an unchanged catalog; a larger
# difference than this is said, with its likely causes.
AGREE = 0.001


def disagreement(section: dict) -> str:
    """A sentence when the in-process pass and the service's feeds pass differ ("" when they
    agree, or there is no in-process pass)."""
    if "offline" not in section:
        return ""
    k, ours, served = section["k"], section["offline"]["feed"], section["feeds"]["feed"]
    names = {"hit_rate": f"next-event hit rate@{k}", "mrr": f"MRR@{k}"}
    apart = [
        f"{label} {ours[m]:.4f} in-process against {served[m]:.4f} served"
        for m, label in names.items()
        if abs(ours.get(m, 0.0) - served.get(m, 0.0)) > AGREE
    ]
    if not apart:
        return ""
    return (
        f"The in-process and served feeds differ ({'; '.join(apart)}), though the same bundle "
        "answers both: they are equal on an unchanged catalog. Likely causes: items removed "
        "or changed in the service's catalog since the bundle was trained, or these events "
        "already posted to the service by an earlier replay (its feeds fold them in and no "
        "longer list their items)."
    )


def _rank(item: str, listed: list) -> int:
    """1-based rank of ``item`` among the listed items (dicts with item_id or ids), 0 if absent."""
    ids = [entry["item_id"] if isinstance(entry, dict) else entry for entry in listed]
    return ids.index(item) + 1 if item in ids else 0


def _scores(ranks: list[int], k: int) -> dict:
    """hit rate@k and MRR@k over events, each with one held-out item."""
    if not ranks:
        return {"events": 0}
    ranks_array = np.asarray(ranks)
    hits = ranks_array[:, None] == np.arange(1, k + 1)[None, :]  # (E, k)
    metrics = per_user_metrics(hits, np.ones(len(ranks)), (k,))
    return {
        "events": len(ranks),
        **{m: float(metrics[f"{m}@{k}"].mean()) for m in ("hit_rate", "mrr")},
    }


def offline_feeds(recommender, events: pd.DataFrame, k: int, diversity: float) -> dict:
    """Pass 1 in-process: the same events scored against ``recommender.recommend`` of the
    same bundle (one batched call for all users)."""
    users = list(dict.fromkeys(events["user_id"].astype(str)))
    results = recommender.recommend(users, k=k, diversity=diversity)
    listed = dict(zip(users, results.ids, strict=True))
    ranks = [
        _rank(item, listed[user])
        for user, item in zip(
            events["user_id"].astype(str), events["item_id"].astype(str), strict=True
        )
    ]
    return {"model_version": recommender.version, **_feed_scores(ranks, events, k)}


def _feed_scores(ranks: list[int], events: pd.DataFrame, k: int) -> dict:
    """``feed``: over all events; ``feed_first``: over each (user, item) pair's first event
    only. A later event of a pair (a view, then a purchase) is never a hit once the first
    was posted (seen items are not listed), so the passes compare on first events."""
    first = ~events.duplicated(["user_id", "item_id"]).to_numpy()
    chosen = np.asarray(ranks, dtype=np.int64)[first].tolist()
    return {"feed": _scores(ranks, k), "feed_first": _scores(chosen, k)}


# -- the command ------------------------------------------------------------------------------


@dataclass
class ReplayResult:
    path: Path  # the report directory
    metrics: dict  # what its metrics.json holds


def replay_report(
    engine,
    url: str,
    events_path: Path | None,
    config,
    replay_config: ReplayConfig,
    out_dir: Path,
    command: str | None = None,
    show_progress: bool = False,
) -> ReplayResult:
    """`recsys evaluate --replay`: the events (``events_path``, else the held-out part of
    this catalog's split under ``config``, an EvaluationConfig), both passes, the in-process
    pass 1 when this catalog's active bundle is the one served, and a report in
    ``out_dir/<timestamp>/``."""
    from recsys.evaluation.report import write_replay_report

    events = _events(engine, events_path, config)
    section = replay(events, url, replay_config, show_progress)
    offline = _offline(engine, events, section["model_version"], replay_config)
    if offline is not None:
        section["offline"] = offline
    section["source"] = str(events_path) if events_path else f"{config.split} split of the catalog"
    metrics = {"replay": section, "config": {"seed": config.seed, "users": config.users}}
    path = write_replay_report(Path(out_dir), metrics, command)
    return ReplayResult(path, metrics)


def _events(engine, events_path: Path | None, config) -> pd.DataFrame:
    if events_path is not None:
        return read_events(events_path, config.users, config.seed)
    from recsys.model.data import read_catalog

    interactions = read_catalog(engine).interactions
    if config.users is not None:
        interactions = sample_users(interactions, config.users, config.seed)
    split = split_interactions(
        interactions, config.split, config.holdout, config.seed, config.cutoff
    )
    if split.test.empty:
        raise InvalidInput(
            f"the {config.split} split of the catalog holds no events out; give --events FILE"
        )
    events = split.test.assign(timestamp=pd.to_datetime(split.test["timestamp"], utc=True))
    return events.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _offline(engine, events: pd.DataFrame, served: str, config: ReplayConfig) -> dict | None:
    """Pass 1 in-process, when this catalog's active bundle is the served one (else None)."""
    from recsys.model.bundle import active_version
    from recsys.model.diversity import DEFAULT_DIVERSITY
    from recsys.serving import served_recommender

    if active_version(engine) != served:
        log.info(
            "the served bundle %s is not this catalog's active one: no in-process pass", served
        )
        return None
    diversity = DEFAULT_DIVERSITY if config.diversity is None else config.diversity
    # as the service answers: the bundle with its live catalog (stock, removed items)
    offline = offline_feeds(served_recommender(engine), events, config.k, diversity)
    offline.pop("model_version")
    return offline
