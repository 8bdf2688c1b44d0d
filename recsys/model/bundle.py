"""Versioned bundle directories: written atomically, checksummed, registered in the catalog.

A bundle is ``<artifacts_dir>/bundles/<version>/`` with ``manifest.json`` (versions, config,
data counts, validation metrics and the SHA-256 of every other file) and the model files.
It is written to a hidden temporary sibling and renamed into place, so a reader never sees
half a bundle; it is refused on load when a checksum does not match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from recsys.catalog.models import ModelBundle
from recsys.errors import InvalidBundle, ModelNotTrained

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def new_version() -> str:
    """Sortable, unique enough for one trainer: 20240501T120000-abcdef."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{hashlib.sha1(str(datetime.now(UTC)).encode()).hexdigest()[:6]}"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    import faiss
    import implicit
    import numpy
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "implicit": implicit.__version__,
        "faiss": faiss.__version__,
    }


def write_bundle(
    root: Path, version: str, write_files: Callable[[Path], None], manifest: dict[str, Any]
) -> Path:
    """Call ``write_files(tmpdir)``, add manifest.json with checksums, rename to root/version."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / version
    if final.exists():
        raise InvalidBundle(f"bundle {final} already exists; pick another version")
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=root))
    try:
        write_files(tmp)
        files = {
            p.relative_to(tmp).as_posix(): sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        manifest = {
            "format_version": FORMAT_VERSION,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "libraries": library_versions(),
            **manifest,
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote bundle %s", final)
    return final


def read_manifest(directory: str | Path, verify: bool = True) -> dict[str, Any]:
    """The manifest of a bundle; with ``verify``, every file's checksum is checked first."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise InvalidBundle(
            f"{directory} is not a model bundle (no {MANIFEST}); run `recsys train`"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidBundle(f"{path} is not valid JSON ({exc}); retrain the bundle") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InvalidBundle(
            f"bundle {directory} has format {manifest.get('format_version')}, this code reads "
            f"{FORMAT_VERSION}; retrain with `recsys train`"
        )
    if verify:
        for name, expected in manifest.get("files", {}).items():
            file = directory / name
            if not file.is_file() or sha256(file) != expected:
                raise InvalidBundle(
                    f"bundle {directory}: {name} is missing or its checksum does not match the "
                    "manifest; the bundle is corrupt, retrain with `recsys train`"
                )
    return manifest


def register_bundle(
    engine: Engine, version: str, path: Path, metrics: dict, activate: bool = True
) -> None:
    """Record the bundle; with ``activate`` it becomes the only active one, in one transaction."""
    with Session(engine) as session, session.begin():
        if activate:
            session.execute(update(ModelBundle).values(is_active=False))
            session.flush()
        session.add(
            ModelBundle(version=version, path=str(path), metrics=metrics, is_active=activate)
        )


def active_bundle(engine: Engine) -> ModelBundle:
    with Session(engine) as session:
        bundle = session.scalars(select(ModelBundle).where(ModelBundle.is_active)).first()
        if bundle is None:
            raise ModelNotTrained("no active model bundle in the catalog; run `recsys train`")
        session.expunge(bundle)
        return bundle


def activate_bundle(engine: Engine, version: str) -> None:
    """Make a registered bundle the only active one (roll forward or back), in one transaction.

    Running services follow within their reload check interval, or at once on
    ``POST /v1/admin/reload``.
    """
    with Session(engine) as session, session.begin():
        if session.scalar(select(ModelBundle.id).where(ModelBundle.version == version)) is None:
            raise InvalidBundle(f"no bundle {version!r} in the registry; see `recsys train`")
        session.execute(update(ModelBundle).values(is_active=False))
        session.flush()
        session.execute(
            update(ModelBundle).where(ModelBundle.version == version).values(is_active=True)
        )
