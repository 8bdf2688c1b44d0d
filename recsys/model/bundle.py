"""Versioned bundle directories: written atomically, checksummed, registered in the catalog,
and read back into a ``Recommender`` (``load_recommender``, ``load_active``).

A bundle is ``<artifacts_dir>/bundles/<version>/`` with ``manifest.json`` (versions, config,
data counts, validation metrics and the SHA-256 of every other file) and the model files.
It is written to a hidden temporary sibling and renamed into place, so a reader never sees
half a bundle; it is refused on load when a checksum does not match.

A run killed at any point leaves nothing that the next ``recsys train`` (or ``recsys bundles
gc``) does not remove: temporary folders are hidden (``.name``), and a bundle renamed into
place but not yet registered carries an ``UNREGISTERED`` file naming its catalog until
``register_bundle`` commits. Writers hold a shared lock on ``.bundles.lock`` beside the
bundles folder from the first file to the registration; ``remove_orphans`` takes it
exclusively, so it only runs when no bundle is being written (a dead writer's lock is released
by the kernel).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import EllipsisType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from recsys.catalog.db import catalog_key
from recsys.catalog.models import SAME_CATALOG_SHARE, ModelBundle, catalog_id, items_held
from recsys.errors import InvalidBundle, ModelNotTrained, RecsysError
from recsys.files import as_if_plain

if TYPE_CHECKING:  # the registry commands (`recsys bundles list`) load no model code: 7 s
    import pandas as pd

    from recsys.model.index import IndexConfig
    from recsys.model.recommender import Recommender

log = logging.getLogger(__name__)

# 2: item vectors hold unweighted blocks, queries carry the weights (surfaces).
# 3: filters as mapped arrays; 4: the CF matrix as three mapped arrays; 5: the cold-item
# predictor (cold_coef.npy, cold_intercept.npy), which new items' vectors need; 6: users'
# factors solved again with recency (cf_recency.json) and text counted in the words of
# recsys.text: code that reads 5 served such a bundle's feeds without the recency and read
# its Chinese titles as whole words, so it refuses them. This code reads 5 and 6.
FORMAT_VERSION = 6
READABLE_FORMATS = (5, 6)
MANIFEST = "manifest.json"
# In a bundle renamed into place but not registered yet; holds the catalog's identity.
UNREGISTERED = "UNREGISTERED"


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
    root: Path,
    version: str,
    write_files: Callable[[Path], None],
    manifest: dict[str, Any],
    catalog: str = "",
) -> Path:
    """Call ``write_files(tmpdir)``, add manifest.json with checksums, rename to root/version.

    With ``catalog`` (``catalog_key(engine.url)``) the bundle keeps an ``UNREGISTERED`` file
    until ``register_bundle``; call both inside ``writing_bundles(root)``.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / version
    if final.exists():
        raise InvalidBundle(f"bundle {final} already exists; pick another version")
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=root))
    try:
        as_if_plain(tmp)  # readable by a service running as another user, as its files are
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
        if catalog:
            (tmp / UNREGISTERED).write_text(catalog)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote bundle %s", final)
    return final


def readable(directory: str | Path) -> bool:
    """Whether ``directory`` holds a bundle manifest of the format this code reads (the
    checks of ``read_manifest`` without the checksums)."""
    try:
        read_manifest(directory, verify=False)
    except InvalidBundle:
        return False
    return True


def read_manifest(directory: str | Path, verify: bool = True) -> dict[str, Any]:
    """The manifest of a bundle; with ``verify``, every file's checksum is checked first.
    ``InvalidBundle`` also when a file cannot be read (a restore with the wrong owner or
    mode): a server then falls back to an earlier bundle as for a corrupt one."""
    try:
        return _read_manifest(Path(directory), verify)
    except OSError as exc:
        raise InvalidBundle(
            f"bundle {directory} cannot be read ({type(exc).__name__}: {exc}); give the "
            "service's user read access to the folder and its files"
        ) from exc


def _read_manifest(directory: Path, verify: bool) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise InvalidBundle(
            f"{directory} is not a model bundle (no {MANIFEST}); run `recsys train`"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidBundle(f"{path} is not valid JSON ({exc}); retrain the bundle") from exc
    if not isinstance(manifest, dict):
        raise InvalidBundle(f"{path} is no bundle manifest (not a JSON object); retrain it")
    found = manifest.get("format_version")
    if found not in READABLE_FORMATS:
        newer = isinstance(found, int) and found > FORMAT_VERSION
        fix = (
            "newer code wrote it: serve it with that code, or activate a bundle this code wrote"
            if newer
            else "retrain with `recsys train`"
        )
        raise InvalidBundle(
            f"bundle {directory} has format {found}, this code reads "
            f"{' and '.join(map(str, READABLE_FORMATS))}; {fix}"
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
    engine: Engine,
    version: str,
    path: Path,
    metrics: dict,
    activate: bool = True,
    created_at: datetime | None = None,
    unless_moved_from: str | EllipsisType | None = ...,
) -> bool:
    """Record the bundle; with ``activate`` it becomes the only active one, in one transaction
    -> whether it did. Then the bundle's ``UNREGISTERED`` file, if any, goes. ``created_at``:
    when the bundle was written (default now; the registry orders fallbacks by it).
    ``unless_moved_from``: the version active when the caller read its data (None: none);
    when another is active by now (a run that overlapped this one, a rollback meanwhile), the
    bundle is registered but not activated: two overlapping trainings made the last to
    finish active, on older data, and a scheduled one undid a rollback made while it ran."""
    with Session(engine) as session, session.begin():
        if activate and unless_moved_from is not ...:
            now = find_active(session)
            moved = (now.version if now is not None else None) != unless_moved_from
            if moved:
                log.warning(
                    "bundle %s is registered, not activated: bundle %s was activated while it "
                    "trained; `recsys bundles activate %s` makes it the active one",
                    version,
                    now.version if now is not None else "(none)",
                    version,
                )
                activate = False
        if activate:
            session.execute(update(ModelBundle).values(is_active=False))
            session.flush()
        row = ModelBundle(version=version, path=str(path), metrics=metrics, is_active=activate)
        if created_at is not None:
            row.created_at = created_at
        session.add(row)
    (Path(path) / UNREGISTERED).unlink(missing_ok=True)
    return activate


def register_folder(
    engine: Engine, folder: str | Path, root: str | Path, activate: bool = False
) -> str:
    """Register a bundle folder the registry lacks (restored from a backup, or the registry
    restored from one older than the bundle), after checking every file: -> its version.
    ``InvalidBundle`` when the folder is not ``root``'s (the artifacts folder's ``bundles/``,
    whose registered bundles ``collect_garbage`` removes) ``<version>``, is no readable
    bundle, names no files, was trained on another catalog (its manifest's ``catalog_id`` is
    not this catalog's, or fewer than ``SAME_CATALOG_SHARE`` of its items are in it), or its
    version is registered already (at another path: the
    registry follows a folder moved under ``root`` by itself, ``located``)."""
    folder = Path(folder).absolute()
    manifest = read_manifest(folder, verify=True)
    version = str(manifest.get("version") or "")
    if not version or not manifest.get("files"):
        raise InvalidBundle(f"bundle {folder}: its manifest names no version or no files")
    home = Path(root).absolute() / version
    if folder.resolve() != home.resolve():
        raise InvalidBundle(
            f"bundle {version} is at {folder}; copy it to {home} first (the registered "
            "bundles live in the artifacts folder, where `recsys bundles gc` removes old ones)"
        )
    if _registered(engine, version):
        raise InvalidBundle(
            f"bundle {version} is registered already; `recsys bundles list` lists them"
        )
    ours, its = catalog_id(engine), manifest.get("catalog_id")
    if ours and its and ours != its:
        raise InvalidBundle(
            f"bundle {version} was trained on another catalog (catalog id {its}; this "
            f"catalog's is {ours}): register it with the catalog it was trained on"
        )
    share = _items_held(engine, folder)
    if share < SAME_CATALOG_SHARE:
        raise InvalidBundle(
            f"bundle {version}: only {share:.0%} of its items are in this catalog (by id and "
            "title); it was trained on another catalog"
        )
    try:
        written = datetime.fromisoformat(manifest["created_at"]).astimezone(UTC)
        written = written.replace(tzinfo=None)
    except (KeyError, TypeError, ValueError):
        written = None
    metrics = {**(manifest.get("metrics") or {}), "registered_from": str(folder)}
    register_bundle(engine, version, folder, metrics, activate, written)
    return version


def _items_held(engine: Engine, folder: Path) -> float:
    """The share of the bundle's items the catalog holds, with the same titles where the
    bundle has them (``items.parquet``): two shops made by the same tools number their items
    alike, and a bundle of the other passed on ids alone."""
    listed = folder / "items.parquet"
    if listed.is_file():
        import pandas as pd

        items = pd.read_parquet(listed, columns=["item_id", "title"])
        titles = [None if pd.isna(t) else str(t) for t in items["title"]]
        return items_held(engine, items["item_id"].astype(str).tolist(), titles)
    ids = np.load(folder / "item_ids.npy", mmap_mode="r", allow_pickle=False)
    return items_held(engine, ids.astype(str).tolist())


def find_active(session: Session) -> ModelBundle | None:
    """The registry's active bundle row in an open session, or None: the one active-bundle
    query that training, serving, evaluation and stats share."""
    return session.scalars(select(ModelBundle).where(ModelBundle.is_active)).first()


def located(path: str, version: str, artifacts_dir: str | Path | None = None) -> str:
    """Where a registered bundle's folder is now: the path the registry recorded, unless
    that holds no bundle and ``artifacts_dir`` (default: the settings', e.g.
    ``RECSYS_ARTIFACTS_DIR``) holds ``bundles/<version>`` with that version's manifest. The
    registry records absolute paths; a catalog restored on another host, with the artifacts
    copied to another folder, answered 503 "not a model bundle" for the old path."""
    try:
        if (Path(path) / MANIFEST).is_file():
            return path
        if artifacts_dir is None:
            from recsys.settings import Settings  # the model package reads no settings

            artifacts_dir = Settings.load().artifacts_dir
        moved = Path(artifacts_dir).absolute() / "bundles" / version
        if read_manifest(moved, verify=False).get("version") != version:
            return path
    except (OSError, RecsysError):
        return path  # what reads it says what is wrong there
    if (version, str(moved)) not in _relocated:  # once: workers ask at every check
        _relocated.add((version, str(moved)))
        log.info("bundle %s is not at %s, found at %s", version, path, moved)
    return str(moved)


_relocated: set[tuple[str, str]] = set()


def active_bundle(engine: Engine) -> ModelBundle:
    """The registry's active bundle row, its folder ``located``; ``ModelNotTrained`` when
    none is active."""
    with Session(engine) as session:
        bundle = find_active(session)
        if bundle is None:
            raise ModelNotTrained("no active model bundle in the catalog; run `recsys train`")
        session.expunge(bundle)
    bundle.path = located(bundle.path, bundle.version)
    return bundle


def earlier_bundles(engine: Engine, other_than: str, limit: int) -> list[ModelBundle]:
    """Up to ``limit`` registered bundles other than ``other_than``, newest first: what a
    server may serve while the active bundle cannot be loaded."""
    query = (
        select(ModelBundle)
        .where(ModelBundle.version != other_than)
        .order_by(ModelBundle.created_at.desc(), ModelBundle.id.desc())
        .limit(limit)
    )
    with Session(engine) as session:
        rows = list(session.scalars(query))
        session.expunge_all()
    for row in rows:
        row.path = located(row.path, row.version)
    return rows


def active_version(engine: Engine) -> str | None:
    """The active bundle's version, or None when nothing is trained."""
    with Session(engine) as session:
        bundle = find_active(session)
        return bundle.version if bundle is not None else None


def activate_bundle(engine: Engine, version: str) -> None:
    """Make a registered bundle the only active one (roll forward or back), in one transaction.

    Running services follow within their reload check interval, or at once on
    ``POST /v1/admin/reload``.
    """
    with Session(engine) as session, session.begin():
        if session.scalar(select(ModelBundle.id).where(ModelBundle.version == version)) is None:
            raise InvalidBundle(
                f"no bundle {version!r} in the registry; `recsys bundles list` lists them"
            )
        session.execute(update(ModelBundle).values(is_active=False))
        session.flush()
        session.execute(
            update(ModelBundle).where(ModelBundle.version == version).values(is_active=True)
        )


# -- locks and clean-up ---------------------------------------------------------------------
@dataclass(frozen=True)
class Collected:
    """What ``collect_garbage`` did: bundle versions removed and kept, orphans removed (None
    when a run was writing a bundle, so orphans were left for later), and the folders of
    removed versions left on disk (version -> path: outside this artifacts folder)."""

    removed: list[str]
    kept: list[str]
    orphans: list[str] | None
    left: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def _lock(root: Path, exclusive: bool) -> Iterator[bool]:
    """flock ``.bundles.lock`` beside ``root``: shared waits, exclusive yields False if busy."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root.with_name(f".{root.name}.lock"), "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def writing_bundles(root: Path) -> Iterator[None]:
    """Hold while writing and registering a bundle under ``root``: no clean-up runs meanwhile."""
    with _lock(Path(root), exclusive=False):
        yield


def drop_unregistered(engine: Engine, path: Path) -> None:
    """Remove the bundle at ``path`` after its registration failed, when the registry says
    it is not in it (a bundle the catalog cannot be asked about is left to ``remove_orphans``:
    the commit may have happened)."""
    try:
        registered = _registered(engine, Path(path).name)
    except Exception as exc:  # the registration's own failure says why (a traceback here
        # was 250 lines of chained SQL errors on a database gone away)
        log.warning("bundle %s is left for the next run to remove (%s)", path, type(exc).__name__)
        return
    if not registered:
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed %s: it was not registered", path)


def remove_orphans(engine: Engine, root: Path) -> list[str] | None:
    """Remove what killed runs left under ``root``: hidden temporary folders, and this
    catalog's bundles that were never registered. The names removed; None (nothing touched)
    while some run is writing a bundle."""
    root = Path(root)
    if not root.is_dir():
        return []
    with _lock(root, exclusive=True) as free:
        if not free:
            log.info("a bundle is being written under %s; orphans are left for later", root)
            return None
        removed = []
        catalog = catalog_key(engine.url)
        for marker in sorted(root.glob(f"*/{UNREGISTERED}")):
            if marker.read_text() != catalog:
                continue  # another catalog's bundle: its own clean-up decides
            if _registered(engine, marker.parent.name):
                marker.unlink()  # killed between the commit and this file's removal
            else:
                _hide(marker.parent)
        for entry in sorted(root.iterdir()):
            if entry.name.startswith(".") and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    for name in removed:
        log.warning("removed %s, left by an interrupted run", root / name)
    return removed


class _Registered(NamedTuple):
    version: str
    path: str
    is_active: bool


def collect_garbage(engine: Engine, root: Path, keep: int) -> Collected:
    """Remove registered bundles older than the newest ``keep`` (never the active one), their
    folders, and orphans (``remove_orphans``). ``InvalidBundle``, nothing removed, when the
    active bundle's folder holds no bundle this code reads: the older bundles are then what
    a server falls back to (a restore that left the active folder behind, `--keep 0`
    after an erasure, removed the one bundle that loaded)."""
    with Session(engine) as session:
        rows = session.execute(
            select(ModelBundle.version, ModelBundle.path, ModelBundle.is_active).order_by(
                ModelBundle.id.desc()
            )
        ).all()
    rows = [
        _Registered(row.version, located(row.path, row.version, Path(root).parent), row.is_active)
        for row in rows
    ]
    for row in rows:
        if row.is_active and not readable(row.path):
            raise InvalidBundle(
                f"the active bundle {row.version} cannot be read at {row.path}, so nothing "
                "was removed: the older bundles are what a server falls back to. Restore its "
                "folder, or activate one that loads (`recsys bundles activate VERSION`), "
                "then collect"
            )
    old = [row for row in rows[keep:] if not row.is_active]
    home = Path(root).resolve()
    hidden = {  # a folder outside the artifacts folder is not ours to remove: its row goes
        row.version: _hide(Path(row.path), row.version)
        if Path(row.path).resolve().parent == home
        else None
        for row in old
    }
    with Session(engine) as session, session.begin():
        versions = ModelBundle.version.in_(list(hidden))
        session.execute(delete(ModelBundle).where(versions, ~ModelBundle.is_active))
        survivors = set(session.scalars(select(ModelBundle.version).where(versions)))
    for row in old:  # activated meanwhile: put its folder back
        if row.version in survivors and hidden[row.version] is not None:
            hidden[row.version].rename(row.path)
    removed = [row.version for row in old if row.version not in survivors]
    for version in removed:
        if hidden[version] is not None:
            shutil.rmtree(hidden[version], ignore_errors=True)
    kept = [row.version for row in rows if row.version not in removed]
    left = {
        row.version: row.path for row in old if row.version in removed and not hidden[row.version]
    }
    return Collected(removed, kept, remove_orphans(engine, root), left)


def unregistered_folders(engine: Engine, root: Path) -> list[Path]:
    """Bundle folders in ``root`` (the artifacts folder's ``bundles/``) the registry lacks:
    trained after a backup that was restored, or registered in another catalog."""
    if not Path(root).is_dir():
        return []
    with Session(engine) as session:
        known = set(session.scalars(select(ModelBundle.version)))
    return sorted(
        folder
        for folder in Path(root).iterdir()
        if folder.name not in known and (folder / MANIFEST).is_file()
    )


def _registered(engine: Engine, version: str) -> bool:
    with Session(engine) as session:
        query = select(ModelBundle.id).where(ModelBundle.version == version)
        return session.scalar(query) is not None


def _hide(folder: Path, version: str | None = None) -> Path | None:
    """Rename a bundle folder to a hidden sibling (removed by ``remove_orphans`` if we die
    before ``rmtree``); None when ``folder`` is not that bundle (gone, or something else)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = {}
    if version is not None and manifest.get("version") != version:
        return None
    hidden = folder.with_name(f".removing-{folder.name}")
    folder.rename(hidden)
    return hidden


# -- model files ---------------------------------------------------------------------------
def write_model_files(
    directory: Path,
    recommender: Recommender,
    tabular=None,
    image_encoder=None,
    items: pd.DataFrame | None = None,
) -> None:
    """Every file of a bundle but the manifest: fused blocks, CF model, index, neighbour table,
    filters, the content encoders and the items' ids and titles."""
    save = np.save
    save(directory / "item_ids.npy", recommender.item_ids, allow_pickle=False)
    if recommender.cf is None or recommender.item_index is not recommender.cf.item_index_:
        recommender.item_index.save(directory, "item_index")  # else the cf model's is read
    save(directory / "item_vectors.npy", recommender.fused.item_vectors_, allow_pickle=False)
    recommender.filters.save(directory)
    recommender.fused.save(directory)
    if recommender.cf is not None:
        recommender.cf.save(directory)
    recommender.index.save(directory / "index.faiss")
    if recommender.neighbours is not None:
        save(directory / "neighbours.npy", recommender.neighbours[0], allow_pickle=False)
        save(directory / "neighbour_scores.npy", recommender.neighbours[1], allow_pickle=False)
    if tabular is not None:
        tabular.save(directory)
    if image_encoder is not None:
        image_encoder.save(directory / "image_encoder")
    if items is not None:
        listed = [c for c in ("item_id", "title", "image_path") if c in items.columns]
        items[listed].to_parquet(directory / "items.parquet", index=False)


def load_recommender(directory: str | Path, index_config: IndexConfig | None = None):
    """The ``Recommender`` of a bundle directory, after checking every file's checksum
    (``InvalidBundle`` when one does not match or a file cannot be read)."""
    directory = Path(directory)
    manifest = read_manifest(directory, verify=True)
    try:
        return _load_verified(directory, manifest, index_config)
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidBundle(f"bundle {directory} cannot be loaded: {exc}") from exc


def load_active(engine: Engine, index_config: IndexConfig | None = None):
    """The ``Recommender`` of the bundle marked active in the catalog's registry."""
    return load_recommender(active_bundle(engine).path, index_config)


def _load_verified(directory: Path, manifest: dict, index_config) -> Recommender:
    from recsys.model.cf import CollaborativeModel
    from recsys.model.config import from_dict
    from recsys.model.data import IdIndex, mapped
    from recsys.model.fusion import FusedModel
    from recsys.model.index import IndexConfig, VectorIndex
    from recsys.model.recommender import ItemFilters, Recommender

    def arr(name: str, **options) -> np.ndarray:
        return np.load(directory / name, allow_pickle=False, **options)

    fused = FusedModel.load(directory)
    cf = CollaborativeModel.load(directory) if fused.has_cf else None
    filters = ItemFilters.load(directory)
    config = index_config or from_dict(IndexConfig, manifest.get("config", {}).get("index", {}))
    index = VectorIndex.load(directory / "index.faiss", fused.item_vectors_, config)
    neighbours = None
    if (directory / "neighbours.npy").exists():  # mapped: worker processes share the pages
        neighbours = (
            arr("neighbours.npy", mmap_mode="r"),
            arr("neighbour_scores.npy", mmap_mode="r"),
        )
    encoder_dir = directory / "image_encoder"
    item_ids = mapped(directory / "item_ids.npy")  # as every per-item array: shared pages
    return Recommender(
        fused,
        cf,
        item_ids,
        filters,
        index,
        manifest,
        neighbours,
        encoder_dir if encoder_dir.is_dir() else None,
        item_index=IdIndex.load(directory, "item_index", item_ids),
    )
