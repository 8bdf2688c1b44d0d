"""One typed settings object, read once at the edge.

Precedence: explicit overrides (CLI flags) > environment (``RECSYS_*``) > defaults.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from recsys.errors import InvalidSettings

ENV_PREFIX = "RECSYS_"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


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

    def __post_init__(self) -> None:
        if not self.database_url or "://" not in self.database_url:
            raise InvalidSettings(
                f"database_url {self.database_url!r} is not a SQLAlchemy URL; "
                "use e.g. sqlite:///var/recsys.db or postgresql+psycopg://user@host/db"
            )
        if not _DEVICE.match(self.device):
            raise InvalidSettings(f"device {self.device!r} is not one of auto, cpu, cuda, cuda:N")
        if self.admin_token and len(self.admin_token) < 16:
            raise InvalidSettings(
                "admin_token is shorter than 16 characters; use a long random secret, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        object.__setattr__(self, "artifacts_dir", Path(self.artifacts_dir))

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then ``RECSYS_<FIELD>`` from ``environ``, then non-None ``overrides``."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for setting in fields(cls):
            env_value = environ.get(ENV_PREFIX + setting.name.upper())
            if env_value:
                values[setting.name] = env_value
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise InvalidSettings(f"unknown settings: {', '.join(sorted(unknown))}")
        return replace(cls(), **values)
