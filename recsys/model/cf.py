"""Collaborative filtering: implicit ALS or BPR over a user x item confidence matrix."""

from __future__ import annotations

import json
import logging
import math
import numbers
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from recsys.errors import UnknownItem
from recsys.model.data import IdIndex, mapped, positions
from recsys.model.frozen import FrozenDict
from recsys.model.sparse_rows import entry_keys, lookup

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class CFConfig:
    # "als" (implicit's AlternatingLeastSquares) or "bpr" (BayesianPersonalizedRanking).
    model: str = "als"
    # Latent dimensions; 16-32 suits catalogs of ~10k items and ~100k interactions.
    factors: int = 32
    regularization: float = 0.05
    # ALS confidence scale: an observed entry weighs alpha * weight (implicit's form of Hu, Koren,
    # Volinsky 2008; unobserved entries weigh 1; recsys.engines.spark maps it to MLlib's).
    alpha: float = 1.0
    iterations: int = 15
    # BPR only.
    learning_rate: float = 0.01
    # Multiplier per event type (e.g. {"purchase": 4, "view": 1}); others get default_event_weight.
    event_weights: dict[str, float] = field(default_factory=dict)
    default_event_weight: float = 1.0
    # Multiply by Interaction.weight (e.g. the rating) as well.
    use_interaction_weight: bool = False
    # Older events of a user count less: weight halves every half_life_days before the user's
    # latest event. None switches decay off.
    half_life_days: float | None = 180.0
    random_state: int = 0
    # Where ALS runs: "implicit" (this process) or "spark" (the session of recsys.engines.spark).
    engine: str = "implicit"
    # The Spark engine's solver (recsys.engines.spark_als): "cg" (implicit's objective and its
    # default steps, 3 conjugate-gradient steps per row: implicit's factors from the same seed),
    # "exact" (implicit's objective, each step solved exactly: implicit's use_cg=False) or
    # "mllib" (MLlib's ALS: its own objective, implicit's confidence and regularisation mapped
    # onto it as near as it allows).
    spark_solver: str = "cg"

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_weights", FrozenDict(self.event_weights))
        if self.model not in ("als", "bpr"):
            raise ValueError(f"CFConfig.model {self.model!r} must be 'als' or 'bpr'")
        if self.engine not in ("implicit", "spark"):
            raise ValueError(f"CFConfig.engine {self.engine!r} must be 'implicit' or 'spark'")
        if self.spark_solver not in ("exact", "cg", "mllib"):
            raise ValueError(
                f"CFConfig.spark_solver {self.spark_solver!r} must be 'exact', 'cg' or 'mllib'"
            )
        if self.engine == "spark" and self.model != "als":
            raise ValueError("CFConfig.engine 'spark' fits ALS only (MLlib has no BPR); use als")
        for name in ("factors", "iterations"):
            if not isinstance(getattr(self, name), numbers.Integral) or getattr(self, name) < 1:
                raise ValueError(f"CFConfig.{name} must be a whole number >= 1")
        for name in ("alpha", "learning_rate"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"CFConfig.{name} must be a finite number > 0")
        if not math.isfinite(self.regularization) or self.regularization < 0:
            raise ValueError("CFConfig.regularization must be a finite number >= 0")
        if self.half_life_days is not None and not (
            math.isfinite(self.half_life_days) and self.half_life_days >= 0
        ):
            raise ValueError("CFConfig.half_life_days must be a finite number >= 0 (0: no decay)")
        weights = {**self.event_weights, "(default)": self.default_event_weight}
        for event, weight in weights.items():
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(
                    f"event weight {event}={weight!r} must be a finite number >= 0 "
                    "(0 leaves that event out)"
                )


# How ALS turns an entry's summed weight w into its confidence c (``Confidence.form``).
CONFIDENCE_FORMS = ("scaled", "hu")


@dataclass(frozen=True)
class Confidence:
    """ALS's confidence of an entry with summed weight w: "scaled", ``c = alpha * w``
    (implicit's form, ``CFConfig.alpha``'s), or "hu", ``c = 1 + alpha * w`` [Hu, Koren,
    Volinsky 2008, eq. 2], under which one view already counts and more weight adds less in
    proportion. Negative weights keep their sign (no preference, with ``|c|``). The weights
    stage may choose one per catalog (``recsys.model.validation``); a fit keeps it as
    ``CollaborativeModel.confidence_``."""

    form: str = "scaled"
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.form not in CONFIDENCE_FORMS:
            forms = ", ".join(CONFIDENCE_FORMS)
            raise ValueError(f"Confidence.form {self.form!r} must be one of {forms}")
        if not self.alpha > 0:
            raise ValueError(f"Confidence.alpha {self.alpha} must be above 0")

    def of(self, weights: np.ndarray) -> np.ndarray:
        """The confidences of summed weights ``weights`` (any shape)."""
        if self.form == "scaled":
            return self.alpha * weights
        return np.sign(weights) * (1.0 + self.alpha * np.abs(weights))


def interaction_weights(interactions: pd.DataFrame, config: CFConfig) -> np.ndarray:
    """Per-row confidence weight: event weight x (interaction weight) x (time decay)."""
    # Per distinct event type, then spread by codes: no Python object per row.
    codes, types = pd.factorize(interactions["event"].astype(str))
    per_type = [config.event_weights.get(t, config.default_event_weight) for t in types]
    per_type = np.asarray([*per_type, config.default_event_weight], dtype=np.float64)
    weights = per_type[codes]  # code -1 (no type): the last entry, the default
    if config.use_interaction_weight:
        weights *= interactions["weight"].to_numpy(dtype=np.float64)
    if config.half_life_days:
        weights *= _decay(interactions, config.half_life_days)
    return weights


def _decay(interactions: pd.DataFrame, half_life_days: float, now: float | None = None):
    """0.5 ** (age / half-life), age measured from each user's latest event not after ``now``
    (epoch seconds; this machine's clock by default); 1 without time.

    An event dated later (ingest refuses them, but an older catalog may hold some) is as new
    as that latest one: the reference was the user's latest event whatever its date, so one
    event dated 2099 made the user's other events 76 years old, decayed to nothing and
    dropped from the fit."""
    stamps = pd.to_datetime(interactions["timestamp"]).to_numpy(dtype="datetime64[ns]")
    seconds = stamps.astype("int64") / 1e9  # any datetime unit -> epoch seconds
    known = interactions["timestamp"].notna().to_numpy()
    present = known & (seconds <= (time.time() if now is None else now))
    users = pd.factorize(interactions["user_id"])[0]  # codes, not a Python string per row
    latest = pd.Series(np.where(present, seconds, -np.inf)).groupby(users).transform("max")
    latest = np.where(np.isfinite(latest), latest, seconds)  # a user with future events only
    age_days = np.maximum(latest - seconds, 0.0) / SECONDS_PER_DAY
    return np.where(known, 0.5 ** (age_days / half_life_days), 1.0)


# A decay below this share of the user's newest event's weight (about 20 half-lives) leaves an
# event next to nothing in the fit; float32, the confidences' type, drops it outright near
# 2**-149 (149 half-lives).
FADED = 1e-6


def warn_faded(interactions: pd.DataFrame, config: CFConfig, share: float = 0.1) -> int:
    """Warn when the time decay leaves over ``share`` of the dated events under ``FADED`` of
    their user's newest event's weight, naming how many, and the items with none above it
    (cold to the collaborative model); returns how many faded. `train --half-life-days 1e-9`
    made 8,303 of MovieLens's 9,066 items cold and halved recall@10, without a word. The
    decay never leaves no event at all: each user's newest keeps its whole weight."""
    if not config.half_life_days or interactions.empty:
        return 0
    faded = _decay(interactions, config.half_life_days) < FADED  # (n,) undated: never
    dated = int(interactions["timestamp"].notna().sum())
    if faded.sum() <= share * dated:
        return int(faded.sum())
    items = pd.factorize(interactions["item_id"])[0]
    kept = np.bincount(items[~faded], minlength=items.max() + 1) > 0  # (items,)
    log.warning(
        "the time decay leaves %s of %s dated events (%.0f%%) under %g of their user's newest "
        "event's weight: %s of %s items have no event above it and are cold to the "
        "collaborative model; a longer half-life keeps them (--half-life-days, "
        "CFConfig.half_life_days: %g days; 0 = no decay)",
        f"{faded.sum():,}",
        f"{dated:,}",
        100 * faded.sum() / dated,
        FADED,
        f"{np.count_nonzero(~kept):,}",
        f"{len(kept):,}",
        config.half_life_days,
    )
    return int(faded.sum())


def events_after(interactions: pd.DataFrame) -> np.ndarray:
    """(n,) per row, how many of the same user's events come after it (by timestamp; rows of
    one moment in file order)."""
    users = pd.factorize(interactions["user_id"])[0]
    stamps = pd.to_datetime(interactions["timestamp"]).to_numpy(dtype="datetime64[ns]")
    order = np.lexsort((np.arange(len(users)), stamps.astype("int64"), users))
    grouped = users[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]]) if len(order) else []
    sizes = np.diff(np.r_[starts, len(order)])
    ends = np.repeat(np.r_[starts, len(order)][1:], sizes)  # (n,) one past each user's run
    after = np.empty(len(order), dtype=np.float64)
    after[order] = ends - 1 - np.arange(len(order))
    return after


def latest_times(interactions: pd.DataFrame, user_ids: np.ndarray) -> np.ndarray:
    """(users,) datetime64[us]: each of ``user_ids``' latest event time (NaT: none dated)."""
    rows = positions(interactions["user_id"], user_ids)
    stamps = pd.to_datetime(interactions["timestamp"]).to_numpy(dtype="datetime64[us]")
    latest = pd.Series(stamps).groupby(rows).max()  # NaT only where a user has no time
    out = np.full(len(user_ids), np.datetime64("NaT"), dtype="datetime64[us]")
    out[latest.index.to_numpy()] = latest.to_numpy(dtype="datetime64[us]")
    return out


def confidence_matrix(
    interactions: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray, config: CFConfig
) -> sp.csr_matrix:
    """(users, items) CSR of summed confidence weights; rows/cols follow the id arrays."""
    rows = positions(interactions["user_id"], user_ids)
    cols = positions(interactions["item_id"], item_ids)
    weights = interaction_weights(interactions, config)
    return _summed(rows, cols, weights, (len(user_ids), len(item_ids)))


def _check_half_lives(half_lives: Sequence[float]) -> None:
    bad = [h for h in half_lives if not (isinstance(h, numbers.Real) and 0 < h < np.inf)]
    if bad:
        raise ValueError(f"recency half-lives must be positive numbers of events, not {bad}")


def _summed(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, shape) -> sp.csr_matrix:
    """CSR of ``weights`` summed per (row, col), zeros dropped, indices sorted."""
    matrix = sp.csr_matrix((weights, (rows, cols)), shape=shape, dtype=np.float32)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return matrix


class CollaborativeModel(BaseEstimator):
    """ALS/BPR factors with external-id mapping both ways.

    ``fit(interactions, item_ids)`` learns one factor row per user in ``interactions`` and per
    item in ``item_ids`` (items without interactions get a zero row, see ``warm_items_``).
    ``use_gpu`` asks for implicit's CUDA models; ``device_`` says where the fit ran ("cpu",
    "cuda", or "spark" for ``CFConfig.engine`` "spark").
    """

    def __init__(self, config: CFConfig | None = None, use_gpu: bool = False):
        self.config = config
        self.use_gpu = use_gpu
        self._yty: np.ndarray | None = None  # item factors' Gram matrix, for fold_in
        self._mllib_reg: float | None = None  # MLlib's regParam, for a Spark model's fold_in

    # -- training ------------------------------------------------------------------------
    def fit(
        self,
        interactions: pd.DataFrame,
        item_ids=None,
        show_progress: bool = False,
        confidence: Confidence | None = None,
        recency: float | None = None,
    ):
        """``confidence``: ALS's confidence form (default: "scaled" with ``CFConfig.alpha``);
        kept as ``confidence_``. The Spark engine takes the default only. ``recency``: the
        users' factors are then solved again with each event also weighing ``0.5 **
        (events_after / recency)`` (``refold_users``), the items' stay fitted on the
        undecayed ones; kept as ``recency_``, and those confidences on ``user_items_``'s
        entries as ``user_recent_`` (ALS on the implicit engine only)."""
        config = self.config or CFConfig()
        self.confidence_ = confidence or Confidence("scaled", config.alpha)
        if config.engine == "spark" and self.confidence_ != Confidence("scaled", config.alpha):
            raise ValueError(
                f"CFConfig.engine 'spark' takes CFConfig.alpha's scaled confidence only, not "
                f"{self.confidence_}; fit on the implicit engine or leave confidence unset"
            )
        if recency is not None:
            if config.model != "als" or config.engine != "implicit":
                raise ValueError(
                    f"recency {recency} needs ALS on the implicit engine, not {config.model} on "
                    f"{config.engine}; leave recency unset"
                )
            _check_half_lives([recency])
        self.recency_ = self.user_recent_ = self.user_latest_ = None
        self._yty = self._mllib_reg = None
        if item_ids is None:
            item_ids = interactions["item_id"].unique()
        self.item_ids_ = np.asarray(item_ids, dtype=str)
        self.user_ids_ = np.asarray(np.sort(interactions["user_id"].unique()), dtype=str)
        self.user_items_ = confidence_matrix(interactions, self.user_ids_, self.item_ids_, config)
        if config.engine == "spark":
            from recsys.engines.spark import fit_als

            user_factors, item_factors = fit_als(self.user_items_, config)
            self.model_, self.device_ = None, "spark"
        else:
            use_gpu = self.use_gpu and _implicit_has_cuda()
            matrix, alpha = self.user_items_, self.confidence_.alpha
            if self.confidence_.form != "scaled":  # implicit takes c = alpha * data
                matrix, alpha = matrix.copy(), 1.0
                matrix.data = self.confidence_.of(matrix.data).astype(np.float32)
            model = implicit_model(replace(config, alpha=alpha), use_gpu=use_gpu)
            model.fit(matrix, show_progress=show_progress)
            model = model.to_cpu() if use_gpu else model
            self.model_, self.device_ = model, "cuda" if use_gpu else "cpu"
            user_factors, item_factors = model.user_factors, model.item_factors
        self._fitted(user_factors, item_factors)
        if recency is not None:
            (self.user_factors_, self.user_recent_), *_ = self.refold_users(interactions, [recency])
            self.recency_ = recency
            self.user_latest_ = latest_times(interactions, self.user_ids_)
        return self

    def refold_users(self, interactions: pd.DataFrame, half_lives: Sequence[float]) -> list:
        """Per half-life (in events): ((users, F) every fitted user's factors solved exactly,
        implicit's batched ``recalculate_user``, against the fitted item factors; (nnz,) the
        confidences they were solved from, on ``user_items_``'s entries), each event also
        weighing ``0.5 ** (events_after / half-life)``: a user's latest events say most about
        what they want next, however many days their history spans. ``interactions`` are the
        fit's; their places, weights and later-event counts are found once for all."""
        check_is_fitted(self, "model_")
        if self.model_ is None or not hasattr(self.model_, "recalculate_user"):
            raise ValueError("refold_users needs a model fitted in this process by implicit ALS")
        _check_half_lives(half_lives)
        config = self.config or CFConfig()
        rows = positions(interactions["user_id"], self.user_ids_)
        cols = positions(interactions["item_id"], self.item_ids_)
        weights, after = interaction_weights(interactions, config), events_after(interactions)
        stored, users = self.user_items_, np.arange(len(self.user_ids_))
        stored_keys = entry_keys(stored)
        out = []
        for half_life in half_lives:
            decayed = weights * 0.5 ** (after / half_life)
            matrix = _summed(rows, cols, decayed, stored.shape)  # a decay below float32: gone
            entries = lookup(entry_keys(matrix), matrix.data, stored_keys).astype(np.float32)
            if self.confidence_.form != "scaled":  # as fit hands it to implicit (alpha 1)
                matrix.data = self.confidence_.of(matrix.data).astype(np.float32)
            factors = self.model_.recalculate_user(users, matrix)
            out.append((np.ascontiguousarray(factors, dtype=np.float32), entries))
        return out

    def fit_events(self, path: str, item_ids):
        """``CFConfig.engine`` "spark" only: fit on the Parquet event folder ``path`` read by
        Spark, the confidences aggregated there (``recsys.engines.spark.fit_events``), so this
        process never holds the events; the same model ``fit`` learns from them."""
        config = self.config or CFConfig()
        if config.engine != "spark":
            raise ValueError("fit_events needs CFConfig.engine 'spark'; use fit(interactions)")
        from recsys.engines.spark import fit_events

        self._yty = self._mllib_reg = None
        self.confidence_, self.recency_ = Confidence("scaled", config.alpha), None
        self.user_recent_ = self.user_latest_ = None
        self.item_ids_ = np.asarray(item_ids, dtype=str)
        fit = fit_events(path, self.item_ids_, config)
        self.user_ids_, self.user_items_ = fit.user_ids, fit.user_items
        self.model_, self.device_ = None, "spark"
        return self._fitted(fit.user_factors, fit.item_factors)

    def _fitted(self, user_factors: np.ndarray, item_factors: np.ndarray):
        self.user_factors_ = np.ascontiguousarray(user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(item_factors, dtype=np.float32)
        self.warm_items_ = np.asarray(self.user_items_.getnnz(axis=0) > 0)
        self.item_factors_[~self.warm_items_] = 0.0
        self._index()
        return self

    def _index(self) -> None:
        self.user_index_ = IdIndex(self.user_ids_)
        self.item_index_ = IdIndex(self.item_ids_)

    # -- queries -------------------------------------------------------------------------
    def item_rows(self, item_ids) -> np.ndarray:
        """Row numbers of external item ids; ``UnknownItem`` names the first unknown one."""
        check_is_fitted(self, "item_index_")
        ids = np.atleast_1d(np.asarray(item_ids, dtype=object))
        rows = self.item_index_.rows(ids)
        if (rows < 0).any():
            unknown = ids[np.argmax(rows < 0)]
            raise UnknownItem(f"item {unknown!r} is not in the model; retrain to include it")
        return rows

    def user_rows(self, user_ids) -> np.ndarray:
        """Row numbers of external user ids, -1 for users the model has not seen."""
        check_is_fitted(self, "user_index_")
        return self.user_index_.rows(user_ids)

    def fold_in(self, item_ids, weights=None, stand_ins=None, extra=None) -> np.ndarray:
        """A user vector from a history of items, without retraining.

        ALS solves the user's least-squares step exactly (implicit's ``recalculate_user``);
        BPR uses a ridge projection onto the item factors. ``stand_ins``: item rows -> (n, F)
        factors for the history's items the fit saw no interaction of (their own are 0), e.g.
        those the fused model predicts from their content (``FusedModel.cf_stand_ins``);
        without it such an item adds nothing. ``extra``: (m, F) stand-in factors of history
        items the model does not hold at all (items added since: the live catalog's), each
        weighing 1.
        """
        history = self.history_row(item_ids, weights)
        factors, fitted = self.history_factors(history.indices, stand_ins)
        if extra is not None and len(extra):
            factors = np.vstack([factors, np.asarray(extra, dtype=np.float64)])
            fitted = np.concatenate([fitted, np.zeros(len(extra), dtype=bool)])
            data = np.concatenate([history.data, np.ones(len(extra), dtype=np.float32)])
            history = sp.csr_matrix((data, (np.zeros(len(data), dtype=int), np.arange(len(data)))))
        config = self.config or CFConfig()
        if config.model == "als":
            confidence, reg = self._als_terms(history, config)
            return _als_fold_in(factors, self.gram, fitted, confidence, reg)
        return _ridge_fold_in(factors, history.data, config.regularization)

    def history_row(self, item_ids, weights=None) -> sp.csr_matrix:
        """(1, items) a history's summed weights (1 each by default); a weight of 0 (a recency
        decay below float32, a weight-0 event) is no entry: the fit never saw it, and as a
        confidence of 0 it would push the user away from the item."""
        rows = self.item_rows(item_ids)
        weights = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=float)
        history = sp.csr_matrix(
            (weights.astype(np.float32), (np.zeros(len(rows), dtype=int), rows)),
            shape=(1, len(self.item_ids_)),
        )
        history.sum_duplicates()
        history.eliminate_zeros()
        return history

    def history_factors(self, rows: np.ndarray, stand_ins=None) -> tuple[np.ndarray, np.ndarray]:
        """((n, F) float64 factors of item ``rows``, (n,) bool whether the fit saw the item):
        ``stand_ins(rows)`` for the items it did not, when given (``fold_in``)."""
        factors = np.asarray(self.item_factors_[rows], dtype=np.float64)
        fitted = np.asarray(self.warm_items_[rows], dtype=bool)
        if stand_ins is not None and not fitted.all():
            factors[~fitted] = stand_ins(rows[~fitted])
        return factors, fitted

    @property
    def gram(self) -> np.ndarray:
        """(F, F) float64 Y'Y of the item factors (computed on first use)."""
        if self._yty is None:
            factors = self.item_factors_.astype(np.float64)
            self._yty = factors.T @ factors
        return self._yty

    def _als_terms(self, history: sp.csr_matrix, config: CFConfig) -> tuple[np.ndarray, float]:
        """Confidences and regularisation of the ALS user step of the solver that fitted the
        item factors: implicit's ``alpha * w`` and ``lambda`` (implicit, or Spark's "cg" and
        "exact" solvers), or MLlib's (the mapping of ``recsys.engines.spark.mllib_confidence``) and
        ``regParam`` times the user's positive entries."""
        confidence = self.confidence.of(history.data.astype(np.float64))
        if config.engine != "spark" or config.spark_solver != "mllib":
            return confidence, config.regularization
        from recsys.engines.spark import als_params, mllib_confidence, mllib_entries

        if self._mllib_reg is None:
            matrix, warm = self.user_items_, int(self.warm_items_.sum())
            entries = mllib_entries(matrix, config.alpha)
            self._mllib_reg = als_params(config, matrix.shape[0], warm, entries).reg_param
        confidence = mllib_confidence(confidence)
        return confidence, self._mllib_reg * int((confidence > 0).sum())

    @property
    def confidence(self) -> Confidence:
        """The confidence form the factors were fitted with (``CFConfig.alpha``'s scaled
        form for a model fitted before the form could be chosen)."""
        own = getattr(self, "confidence_", None)
        return own or Confidence("scaled", (self.config or CFConfig()).alpha)

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: str | Path, prefix: str = "cf") -> list[Path]:
        """Writes factors, ids and the interaction matrix's three arrays as .npy (no pickles)."""
        check_is_fitted(self, "item_factors_")
        directory = Path(directory)
        arrays = {
            "user_factors": self.user_factors_,
            "item_factors": self.item_factors_,
            "user_ids": self.user_ids_,
            "item_ids": self.item_ids_,
        }
        paths = []
        for name, array in arrays.items():
            paths.append(directory / f"{prefix}_{name}.npy")
            np.save(paths[-1], array, allow_pickle=False)
        for name in ("user_index", "item_index"):  # mapped on load, as the ids
            getattr(self, f"{name}_").save(directory, f"{prefix}_{name}")
            paths += [directory / f"{prefix}_{name}_{part}.npy" for part in ("sorted", "order")]
        matrix = self.user_items_
        for part in ("data", "indices", "indptr"):  # plain arrays, so a load can map them
            paths.append(directory / f"{prefix}_user_items_{part}.npy")
            np.save(paths[-1], getattr(matrix, part), allow_pickle=False)
        paths.append(directory / f"{prefix}_config.json")
        paths[-1].write_text(json.dumps(asdict(self.config or CFConfig()), indent=2))
        paths.append(directory / f"{prefix}_confidence.json")
        paths[-1].write_text(json.dumps(asdict(self.confidence)))
        paths.append(directory / f"{prefix}_recency.json")
        paths[-1].write_text(json.dumps({"half_life_events": self.recency_}))
        if self.user_recent_ is not None:  # on user_items_'s entries, for a fold-in's weights
            paths.append(directory / f"{prefix}_user_recent.npy")
            np.save(paths[-1], self.user_recent_, allow_pickle=False)
        if self.user_latest_ is not None:  # which of a fold-in's events came late
            paths.append(directory / f"{prefix}_user_latest.npy")
            np.save(paths[-1], self.user_latest_, allow_pickle=False)
        return paths

    @classmethod
    def load(cls, directory: str | Path, prefix: str = "cf") -> CollaborativeModel:
        directory = Path(directory)
        from recsys.model.config import from_dict

        values = json.loads((directory / f"{prefix}_config.json").read_text())
        if values.get("engine") == "spark":  # Spark bundles saved before the exact solver
            values.setdefault("spark_solver", "mllib")
        model = cls(from_dict(CFConfig, values))

        def arr(name):  # mapped read-only: the workers serving a bundle share the pages
            return mapped(directory / f"{prefix}_{name}.npy")

        model.user_factors_, model.item_factors_ = arr("user_factors"), arr("item_factors")
        model.user_ids_, model.item_ids_ = arr("user_ids"), arr("item_ids")
        shape = (len(model.user_ids_), len(model.item_ids_))
        parts = tuple(arr(f"user_items_{part}") for part in ("data", "indices", "indptr"))
        model.user_items_ = sp.csr_matrix(parts, shape=shape, copy=False)
        model.warm_items_ = np.asarray(model.user_items_.getnnz(axis=0) > 0)
        model.model_, model.device_ = None, "cpu"
        chosen = directory / f"{prefix}_confidence.json"  # absent from older bundles
        if chosen.exists():
            model.confidence_ = Confidence(**json.loads(chosen.read_text()))
        recency = directory / f"{prefix}_recency.json"  # absent from older bundles
        model.recency_ = model.user_recent_ = model.user_latest_ = None
        if recency.exists():
            model.recency_ = json.loads(recency.read_text())["half_life_events"]
        if model.recency_ is not None:
            model.user_recent_ = arr("user_recent")
            if (directory / f"{prefix}_user_latest.npy").exists():  # absent from older bundles
                model.user_latest_ = arr("user_latest")
        for name, ids in (("user", model.user_ids_), ("item", model.item_ids_)):
            index = IdIndex.load(directory, f"{prefix}_{name}_index", ids)
            setattr(model, f"{name}_index_", IdIndex(ids) if index is None else index)
        return model


def _als_fold_in(factors, yty, fitted, confidence, reg) -> np.ndarray:
    """ALS's exact user step for one history (implicit's ``recalculate_user``, in numpy: it
    reads the item factors without writing, so they can stay mapped read-only):
    ``(Y'Y + Y'(C - I)Y + lambda I) x = Y'C p`` with the history's ``factors`` (n, F) and
    ``confidence`` C. A stand-in factor (``fitted`` False) is not in Y'Y: its item adds
    ``C y y'``, not ``(C - 1) y y'``."""
    a = yty + reg * np.eye(len(yty))
    a += (factors.T * (np.abs(confidence) - fitted)) @ factors
    b = (np.clip(confidence, 0, None)[:, None] * factors).sum(axis=0)
    return np.linalg.solve(a, b).astype(np.float32)


def implicit_model(config: CFConfig, use_gpu: bool = False, num_threads: int = 0):
    """The unfitted implicit ALS or BPR model ``config`` describes; the one place either is
    built (``recsys train`` and the evaluation's ALS/BPR peers). ``num_threads=1`` makes BPR's
    Hogwild SGD reproducible."""
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking

    common = {
        "factors": config.factors,
        "regularization": config.regularization,
        "iterations": config.iterations,
        "random_state": config.random_state,
        "use_gpu": use_gpu,
        "num_threads": num_threads,
    }
    if config.model == "als":
        return AlternatingLeastSquares(alpha=config.alpha, **common)
    return BayesianPersonalizedRanking(learning_rate=config.learning_rate, **common)


def _implicit_has_cuda() -> bool:
    import implicit.gpu

    return bool(implicit.gpu.HAS_CUDA)


def _ridge_fold_in(factors: np.ndarray, weights: np.ndarray, reg: float) -> np.ndarray:
    """argmin_u sum_i w_i (1 - u.v_i)^2 + reg |u|^2 over the history's item ``factors``."""
    weights = np.asarray(weights, dtype=np.float64)
    gram = factors.T @ (factors * weights[:, None]) + max(reg, 1e-3) * np.eye(factors.shape[1])
    return np.linalg.solve(gram, factors.T @ weights).astype(np.float32)
