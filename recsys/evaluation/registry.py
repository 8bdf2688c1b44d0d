"""Recording an evaluation's summary with the catalog's active model bundle.

The summary (the fused contender's metrics, the split and the report's path) goes into the
bundle's registry row, ``model_bundles.metrics["evaluation"]``, and into ``evaluation.json``
beside the bundle's ``manifest.json``. The manifest itself is left as written: it lists the
SHA-256 of the bundle's model files, which `read_manifest` verifies; evaluation.json is not
a model file, is not listed, and so never fails that check. Both hold the latest evaluation
of the bundle on all users, else its latest on a user sample.

The evaluated fused model is trained on the split's training part with the same code and
configuration as `recsys train`; the bundle itself was trained on all interactions. The
figures are recorded with the bundle only when the evaluated config shapes the same model as
the one in the bundle's manifest (``recsys.model.config.model_shaping``: every field but how
the bundle is served and the seed); the record holds that summary as ``config``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from recsys.catalog.models import ModelBundle
from recsys.errors import InvalidBundle
from recsys.files import as_if_plain
from recsys.model.bundle import read_manifest
from recsys.model.config import model_shaping, shaping_differences

log = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"
# Keys of a metrics block that are not figures: its users, and the cold-items block's mark
# of a contender that gave every new item one score (protocol.score).
NOT_FIGURES = ("users", "tied")


def summary(metrics: dict, report: Path) -> dict:
    """The fused contender's overall and cold-item metrics, the split, the report, and how
    many users it scored (``user_sample``: the sample evaluated, None for all)."""
    fused = metrics.get("contenders", {}).get("fused")
    out = {"report": str(Path(report).resolve()), "split": metrics.get("split")}
    out["user_sample"] = metrics.get("data", {}).get("user_sample")
    if fused is not None:
        out["users"] = fused["overall"].get("users")
        out["metrics"] = {k: v for k, v in fused["overall"].items() if k != "users"}
        cold = fused["cold_items"]
        out["metrics"].update({f"cold_{k}": v for k, v in cold.items() if k not in NOT_FIGURES})
    if "images" in metrics:
        out["images"] = metrics["images"]
    return out


@dataclass(frozen=True)
class Recording:
    """Where an evaluation's summary was recorded: ``bundle`` (None: not recorded), and when
    there was an active bundle it was not recorded with, ``reason`` (said by the CLI)."""

    bundle: str | None
    reason: str | None = None


def record_with_bundle(engine: Engine, version: str | None, metrics: dict, report: Path):
    """Add the summary to bundle ``version``'s registry row and directory: the bundle active
    when the evaluation read its data (a `recsys train` finishing mid-run had the result land
    on the new bundle) -> a ``Recording``. Not recorded: no bundle; a bundle trained with
    another model config than the evaluated one (`recsys train --factors 8` had the figures
    of the default 32 factors); or a run on a user sample where the bundle holds a run on all
    users (`--users 20` replaced it)."""
    if version is None:
        log.info("no active bundle: the evaluation is recorded in the report only")
        return Recording(None)
    record = summary(metrics, report)
    evaluated = model_shaping(metrics["config"]["fused"])
    record["config"] = evaluated
    with Session(engine) as session:
        bundle = session.scalars(select(ModelBundle).where(ModelBundle.version == version)).first()
        path = None if bundle is None else Path(bundle.path)
        earlier = None if bundle is None else (bundle.metrics or {}).get("evaluation")
    if path is None:
        return _not_recorded(version, "it is gone")
    if why := _trained_otherwise(path, evaluated):
        return _not_recorded(version, why)
    if record["user_sample"] and earlier and not earlier.get("user_sample"):
        return _not_recorded(
            version,
            f"it keeps its evaluation on all users ({earlier['report']}): this run scored a "
            f"sample of {record['user_sample']} users, whose figures are not comparable "
            "(--all-users to replace it)",
        )
    with Session(engine) as session, session.begin():
        bundle = session.scalars(select(ModelBundle).where(ModelBundle.version == version)).first()
        if bundle is None:
            return _not_recorded(version, "it is gone")
        merged = {**(bundle.metrics or {}), "evaluation": record}
        session.execute(
            update(ModelBundle).where(ModelBundle.id == bundle.id).values(metrics=merged)
        )
    if path.is_dir():
        _write_atomic(path / EVALUATION_FILE, json.dumps(record, indent=2))
    else:
        log.warning("bundle %s has no directory at %s; registry row updated only", version, path)
    log.info("evaluation recorded with bundle %s", version)
    return Recording(version)


def _trained_otherwise(path: Path, evaluated: dict) -> str | None:
    """Why bundle ``path`` is not the evaluated model's (None: the same model config)."""
    try:
        manifest = read_manifest(path, verify=False)
    except InvalidBundle as exc:
        return f"its manifest cannot be read to compare configs ({exc})"
    differences = shaping_differences(model_shaping(manifest.get("config") or {}), evaluated)
    if not differences:
        return None
    trained = ", ".join(f"{name} {_shown(a)}" for name, (a, _) in differences.items())
    this = ", ".join(_shown(b) for _, b in differences.values())
    return (
        f"it was trained with {trained} (this evaluation: {this}); evaluate with the options it "
        "was trained with to record the figures with it"
    )


def _shown(value) -> str:
    return json.dumps(value, sort_keys=True)


def _not_recorded(version: str, why: str) -> Recording:
    reason = f"not recorded with bundle {version}: {why}"
    log.info("%s; the evaluation is in the report only", reason)
    return Recording(None, reason)


def _write_atomic(path: Path, text: str) -> None:
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        as_if_plain(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
