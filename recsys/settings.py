"""One typed settings object, read once at the edge.

Precedence: explicit overrides (CLI flags) > environment (``RECSYS_*``) > defaults.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from recsys.errors import InvalidSettings
from recsys.scopes import DEFAULT_PUBLIC, OPENABLE, parse_scopes

log = logging.getLogger(__name__)

ENV_PREFIX = "RECSYS_"
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_CURRENCY = re.compile(r"[A-Z]{3}|")
LOG_FORMATS = ("text", "json")
_ORIGIN = re.compile(r"https?://[^/\s:]+(:\d{1,5})?")


@dataclass(frozen=True)
class Settings:
    # SQLAlchemy URL of the catalog; PostgreSQL in production, e.g.
    # postgresql+psycopg://user:pass@host/dbname
    database_url: str = "sqlite:///var/recsys.db"
    # Where trained model bundles and other artifacts are written.
    artifacts_dir: Path = Path("var/artifacts")
    # Compute device for training and indexing: auto (GPU when present), cpu, cuda or cuda:N.
    device: str = "auto"
    # Bearer token for the service's admin endpoints (POST /v1/admin/reload); empty disables
    # them. Set it from a secret store, never in code.
    admin_token: str = field(default="", repr=False)
    # Scopes every caller has without an API key (comma-separated in RECSYS_PUBLIC_SCOPES);
    # everything else needs `Authorization: Bearer <key>` (see `recsys keys`); "none": all do.
    public_scopes: tuple[str, ...] = DEFAULT_PUBLIC
    # Rate limits in the `limits` notation ("120/minute", several joined by ";"), counted per
    # API key and, separately, per client address: writes (POST /v1/interactions) ...
    write_rate_limit: str = "120/minute"
    # ... and visual search (POST /v1/search/image).
    search_rate_limit: str = "30/minute"
    # Failed key checks (unknown or revoked keys, a wrong admin token) per client address;
    # past it that address's unknown keys are 429s, not looked up, until the window ends.
    key_failure_rate_limit: str = "30/minute"
    # Where the rate-limit counters live: empty = a SQLite file in /dev/shm (or the temp dir)
    # shared by every worker on this host; or a `limits` storage URI (redis://..., memcached://)
    # when several hosts serve together.
    rate_limit_storage: str = ""
    # Browser origins allowed to call the API from their pages (CORS), comma-separated, e.g.
    # https://shop.example,https://www.shop.example; "*" any origin; empty: none (the default).
    cors_origins: tuple[str, ...] = ()
    # Seconds a service's database statement may run, or wait to connect or for a pooled
    # connection, before the request is a 503 (PostgreSQL's statement_timeout); 0: no bound.
    database_timeout: float = 15.0
    # Idle connections each service worker keeps to a database server (as many more open
    # under load): at most twice this per worker.
    database_pool_size: int = 5
    # Largest uploaded image, in pixels (width x height, read from the header before decoding).
    max_image_pixels: int = 25_000_000
    # Item photos written over HTTP (PUT /v1/items/<id>): an "image" path is relative to this
    # folder and must stay inside it; uploaded photos are stored under its uploads/ folder.
    images_root: Path = Path("var/images")
    # Live catalog: the most new or changed items each worker keeps beside its bundle (one
    # vector each); past it answers go on without the newest items and /readyz and /metrics
    # say a retrain is due (README, "Live catalog").
    live_max_items: int = 10_000
    # Ray cluster for the image stages and the neighbour table (`pip install -e ".[ray]"`):
    # empty = run in-process; "local" = start a Ray instance on this machine; "auto" = join the
    # cluster this machine belongs to (`ray start`); or an address such as ray://head:10001.
    ray_address: str = ""
    # Spark master for `recsys train --cf-engine spark` (`pip install -e ".[spark]"`, Java 17):
    # local[*] = every core of this machine; spark://host:7077, yarn or k8s://https://host:443
    # for a cluster (README, "Running on a cluster").
    spark_master: str = "local[*]"
    # The currency the web page shows item prices in (the "price" attribute), as an ISO 4217
    # code such as EUR or USD; empty shows the number alone.
    currency: str = ""
    # A folder the workers of one server share, for what one of them computes for all (the
    # catalog-health fits); services/gunicorn.conf.py makes one per server and removes it on
    # exit. Empty: each worker computes its own.
    shared_dir: str = ""
    # How log lines are written: "text" (time, pid, level, logger, message) or "json" (one
    # object a line, for a log collector: the service's own lines, gunicorn's, and its access
    # log when RECSYS_ACCESS_LOG is set; see README, "Logs").
    log_format: str = "text"
    # An item attribute naming the product each item is a variant of (e.g. style, for a shop
    # listing each size and colour as an item): similar items, feeds and visual search list
    # one item per value and leave out the query item's own, and the duplicates leave out
    # pairs of one value (README, "Variants"). Empty: every item stands alone. A request's
    # group_by overrides it.
    group_by: str = ""

    def __post_init__(self) -> None:
        if not self.database_url or "://" not in self.database_url:
            raise InvalidSettings(
                f"database_url {self.database_url!r} is not a SQLAlchemy URL; "
                "use e.g. sqlite:///var/recsys.db or postgresql+psycopg://user@host/db",
                "database_url",
            )
        if not DEVICE.match(self.device):
            raise InvalidSettings(
                f"device {self.device!r} is not one of auto, cpu, cuda, cuda:N", "device"
            )
        # A secret mounted from a file ends in a line break: the token sent has none.
        token = str(self.admin_token)
        object.__setattr__(self, "admin_token", token.strip())
        if token and not self.admin_token:
            raise InvalidSettings(
                "admin_token is only white space; set a long random secret", "admin_token"
            )
        if self.admin_token and len(self.admin_token) < 16:
            raise InvalidSettings(
                "admin_token is shorter than 16 characters; use a long random secret, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
                "admin_token",
            )
        if not _CURRENCY.fullmatch(self.currency):
            raise InvalidSettings(
                f"currency {self.currency!r} is not an ISO 4217 code; write e.g. EUR, USD or GBP "
                "(three capital letters), or leave it empty for prices without a currency",
                "currency",
            )
        object.__setattr__(self, "log_format", str(self.log_format).strip().lower())
        if self.log_format not in LOG_FORMATS:
            raise InvalidSettings(
                f"log_format {self.log_format!r} is not one of {', '.join(LOG_FORMATS)}",
                "log_format",
            )
        # a quoted "~/a" (RECSYS_ARTIFACTS_DIR=~/a in a unit file) made a folder named ~
        object.__setattr__(self, "artifacts_dir", Path(self.artifacts_dir).expanduser())
        object.__setattr__(self, "images_root", Path(self.images_root).expanduser())
        if self.shared_dir:  # a string: empty means none
            object.__setattr__(self, "shared_dir", os.path.expanduser(self.shared_dir))
        object.__setattr__(self, "live_max_items", _count(self.live_max_items, "live_max_items"))
        if isinstance(self.public_scopes, str) and not self.public_scopes.replace(",", "").strip():
            raise InvalidSettings(
                f"public_scopes {self.public_scopes!r} names no scope; leave it unset for the "
                "default, or write none to close every read",
                "public_scopes",
            )
        try:
            given = "" if self.public_scopes == "none" else self.public_scopes
            scopes = parse_scopes(given, "public_scopes")
        except ValueError as exc:
            raise InvalidSettings(str(exc), "public_scopes") from None
        unsafe = [scope for scope in scopes if scope not in OPENABLE]
        if unsafe:  # it opened reloads, catalog-health writes and item writes to anyone
            raise InvalidSettings(
                f"public_scopes: {unsafe[0]} cannot be public: it writes or administers; "
                f"public scopes are reads among {', '.join(OPENABLE)}",
                "public_scopes",
            )
        object.__setattr__(self, "public_scopes", scopes)
        object.__setattr__(self, "cors_origins", _origins(self.cors_origins))
        for name in ("write_rate_limit", "search_rate_limit", "key_failure_rate_limit"):
            _check_rate_limit(name, getattr(self, name))
        object.__setattr__(self, "max_image_pixels", _positive_int(self.max_image_pixels))
        pool = _count(self.database_pool_size, "database_pool_size")
        if pool < 1:
            raise InvalidSettings("database_pool_size must be at least 1", "database_pool_size")
        object.__setattr__(self, "database_pool_size", pool)
        try:
            timeout = float(self.database_timeout)
        except (TypeError, ValueError):
            timeout = -1.0
        if not 0 <= timeout < 86_400:
            raise InvalidSettings(
                f"database_timeout {self.database_timeout!r} is not a number of seconds from 0 "
                "(no bound) to 86400; write e.g. 15",
                "database_timeout",
            )
        object.__setattr__(self, "database_timeout", timeout)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then ``RECSYS_<FIELD>`` from ``environ``, then non-None ``overrides``.
        An ``InvalidSettings`` of a value from ``environ`` names its variable
        (`RECSYS_DEVICE=bogus recsys stats` said "device 'bogus' is not one of ...")."""
        environ = os.environ if environ is None else environ
        _warn_unknown(environ)
        values: dict[str, object] = {}
        variables: dict[str, str] = {}  # setting -> the variable its value came from
        for setting in fields(cls):
            variable = ENV_PREFIX + setting.name.upper()
            if environ.get(variable):
                values[setting.name], variables[setting.name] = environ[variable], variable
        given = {k: v for k, v in overrides.items() if v is not None}
        values.update(given)
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise InvalidSettings(f"unknown settings: {', '.join(sorted(unknown))}")
        try:
            return replace(cls(), **values)
        except InvalidSettings as exc:
            if exc.setting in given or exc.setting not in variables:
                raise
            raise set_by(exc, variables[exc.setting]) from exc.__cause__


def set_by(exc: InvalidSettings, source: str) -> InvalidSettings:
    """``exc`` saying where the setting's value came from: a variable or a flag."""
    return InvalidSettings(f"{exc} (set by {source})", exc.setting)


# RECSYS_* variables read elsewhere than ``Settings``: the server's (services/gunicorn.conf.py),
# the Flask settings' prefix, the replay's key, and the test suite's.
OTHER_VARIABLES = (
    "BIND", "WORKERS", "THREADS", "WORKER_CLASS", "WORKER_TMP_DIR", "ACCESS_LOG", "API_KEY",
    "TEST_POSTGRES_URL", "REQUIRE_POSTGRES", "REQUIRE_BROWSER", "FUZZ_EXAMPLES",
)  # fmt: skip
_warned: set[str] = set()


def _warn_unknown(environ: Mapping[str, str]) -> None:
    """Log once per process each ``RECSYS_*`` variable no setting reads, with the name it
    was probably meant to be: a misspelt RECSYS_DATABSE_URL was ignored in silence, and
    `db upgrade` then made a new, empty catalog at the default path."""
    known = [ENV_PREFIX + f.name.upper() for f in fields(Settings)]
    known += [ENV_PREFIX + name for name in OTHER_VARIABLES]
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name.startswith(ENV_PREFIX + "FLASK_"):
            continue
        if name in known or name in _warned:
            continue
        _warned.add(name)
        log.warning(ignored_variable(name, known))


def ignored_variable(name: str, known: list[str], prefix: str = "") -> str:
    """The warning for an environment variable ``name`` no setting reads, naming the one of
    ``known`` it was probably meant to be (compared past ``prefix``: typos, not kin)."""
    part = name.removeprefix(prefix)
    guess = difflib.get_close_matches(part, [k.removeprefix(prefix) for k in known], 1, 0.85)
    hint = f" (did you mean {prefix}{guess[0]}?)" if guess else ""
    return f"{name} is not a setting this code reads; it is ignored{hint}"


def _origins(value: str | tuple[str, ...]) -> tuple[str, ...]:
    """Origins from ``"https://a.example,https://b.example"`` (or a tuple), each checked:
    scheme and host, no path, or ``*``."""
    names = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    for name in names:
        port = name.rpartition(":")[2]
        if name != "*" and (
            not _ORIGIN.fullmatch(name) or (port.isdigit() and not 0 < int(port) <= 65535)
        ):
            raise InvalidSettings(
                f"cors_origins: {name!r} is not an origin; write scheme and host (and port), "
                "e.g. https://shop.example or http://localhost:3000, without a path; or *",
                "cors_origins",
            )
    if "*" in names and len(names) > 1:
        raise InvalidSettings(
            "cors_origins: * already allows every origin; give * alone", "cors_origins"
        )
    # browsers send the scheme and host in lower case: Shop.Example never matched
    return tuple(dict.fromkeys(name.lower() for name in names))


def _check_rate_limit(name: str, value: str) -> None:
    from limits import parse_many  # the notation services/limits.py counts in

    try:
        limits = parse_many(value)
    except ValueError:
        raise InvalidSettings(
            f"{name} {value!r} is not a rate limit; write e.g. 120/minute or 10/second;1000/day",
            name,
        ) from None
    if any(limit.amount < 1 for limit in limits):
        raise InvalidSettings(
            f"{name} {value!r} allows no request at all; write e.g. 120/minute", name
        )


def _positive_int(value: object) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number <= 0:
        raise InvalidSettings(
            f"max_image_pixels {value!r} is not a positive whole number", "max_image_pixels"
        )
    return number


def _count(value: object, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        raise InvalidSettings(f"{name} {value!r} is not a whole number >= 0", name)
    return number
