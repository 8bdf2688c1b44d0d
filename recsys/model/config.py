"""What `recsys train` (and the evaluation's fused contender) is told to build: frozen configs.

A config is read, never written: what a fit learns or resolves (the chosen block weights, the
device it ran on) is returned in the fit's result and saved in the bundle manifest.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from recsys.model.cf import CFConfig
from recsys.model.fusion import FusionConfig
from recsys.model.index import IndexConfig
from recsys.model.tabular import TabularConfig

C = TypeVar("C")


@dataclass(frozen=True)
class WeightGrid:
    # Candidate block weights, searched one block at a time from cf alone (cf 1); blocks the
    # data lacks are skipped. 0 drops a block the data does not support; the large
    # popularity weights let a catalog whose taste is mostly popularity (long tails, few
    # events per user) rank like popularity, and cf, searched last, may then fall too: where
    # the collaborative model is weaker than what the other blocks found (the synthetic
    # long-tail shop: ALS recall@10 0.016 against popularity's 0.064), it stops diluting them.
    tabular: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0)
    image: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0)
    popularity: tuple[float, ...] = (0.0, 0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0, 100.0)
    cf: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0)
    # The feed's exact token term (recsys.model.fusion.TOKENS): the cosine of a user's
    # attribute and title token profile to an item's tokens.
    tokens: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0)
    # Passes over the blocks (a pass that changes nothing ends the search).
    rounds: int = 2
    # A candidate replaces the current weights only when the validation users' paired mean
    # gain exceeds this many standard errors (noise never buys a block weight).
    significance: float = 2.0
    # With fewer validation users than this (those the weights stage samples, holding
    # events out) the whole stage keeps the defaults: the config's weights and cold
    # multipliers, and "more like this" weights for both surfaces (no co-viewing to show
    # yet). A 2-standard-error gain cannot show on a few users, so the search would keep cf
    # alone: a shop's first 50 events fed new shoppers 0.36 same-class items, against 0.98
    # from the content-only bundle with no events. The benchmarks' are far above it
    # (MovieLens 671, the demo shop 2,000, the synthetic shop 3,000 of 47k sampled).
    min_users: int = 50
    # Then choose cold items' own block weights (feed weight times FusionConfig.cold_scale)
    # on a cold-only objective: the validation users' held-out events on items cold in the
    # validation fit, ranked among cold items (recsys.model.validation). A cold multiplier
    # replaces the default only when that cold recall gains ``significance`` standard errors
    # and the users' all-items recall does not fall by as much; with fewer than
    # ``cold_min_users`` users holding cold items the defaults stay. (Session 4 searched them
    # on the warm + cold objective, which misjudged MovieLens: cold recall 0.111 -> 0.079.)
    search_cold: bool = True
    cold_min_users: int = 50
    # Cut-off of the cold objective's recall: deeper than the headline's 10, because a few
    # hundred users' cold recall@10 (about 0.05 on the shops) cannot separate candidates
    # within two standard errors, while the order among cold items it judges is the same.
    cold_k: int = 50
    # Candidate multipliers of a block's feed weight for cold items, searched one block at a
    # time; a content block without feed weight is tried at cold weights from its grid
    # (the feed then holds the token term at the grid's smallest non-zero token weight, the
    # tabular and image blocks at a hundredth of theirs: recsys.model.validation).
    cold_multipliers: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    # Then one factor on all cold weights (their ranking among cold items unchanged), chosen
    # on the users' all-items recall: how far cold items compete with warm ones.
    cold_levels: tuple[float, ...] = (0.03, 0.1, 0.3, 3.0)
    # Before the weights: ALS's confidence form, CFConfig.alpha's c = alpha * w unless one of
    # c = 1 + a * w for these a ranks the validation users' items significantly better with
    # ALS alone (recsys.model.cf.Confidence; one more ALS fit on the validation part each).
    # ALS alone, temporal split: MovieLens is best with alpha * w, the synthetic long-tail
    # shop with 1 + 16 w (benchmarks/RESULTS.md, session 8), e.g. (1.0, 4.0, 16.0). Off (the
    # config's form) until the fused model has been measured with it on every catalog.
    confidence_hu: tuple[float, ...] = ()
    # With it, ALS's latent factors: CFConfig.factors unless one of these counts ranks the
    # validation users' items significantly better with ALS alone (one more ALS fit on the
    # validation part each, about twice the default's time). A bookshop whose readers
    # follow authors and series: ALS alone 0.4621 -> 0.5000 with 64 (8 standard errors);
    # MovieLens and the demo shop rank worse with 64 (benchmarks/RESULTS.md, sessions 59 and
    # 66). `--factors N` given on the command line pins N (no candidates); in the library,
    # WeightGrid(factors=()).
    factors: tuple[int, ...] = (64,)
    # Then the users' side of ALS: their factors solved again with each event also weighing
    # 0.5 ** (later events of the user / half-life), for these half-lives in events, and kept
    # only when ALS alone then ranks the validation users' latest items significantly better
    # (recsys.model.validation.choose_recency; the items' factors are left as fitted).
    # MovieLens chooses 5 events; the simulated shops, whose shoppers' tastes do not change
    # over the log, none (benchmarks/RESULTS.md, session 32).
    recency: tuple[float, ...] = (5.0, 10.0, 20.0)

    def __post_init__(self) -> None:
        whole = all(isinstance(n, int) and not isinstance(n, bool) for n in self.factors)
        if not whole or any(n < 1 for n in self.factors):
            raise ValueError(f"WeightGrid.factors must be whole numbers >= 1, got {self.factors}")


@dataclass(frozen=True)
class ImageConfig:
    """The images stage's encoder (``recsys.vision.ImageEncoder``); the rest of its
    configuration keeps the library defaults. Pass ``image_encoder_factory`` to ``train`` for
    full control."""

    # Self-supervised method: simclr, byol or dino.
    method: str = "simclr"
    # Passes over the catalog's images; ignored when time_budget is set. 10,000 28x28 images
    # take 15-20 s an epoch on 2 CPU cores (benchmarks/RESULTS.md, "Demo shop").
    epochs: int = 5
    # Train for this many seconds instead (the result then depends on the machine's speed).
    time_budget: float | None = None
    # Side the images are embedded at, and of the training crops. None = the size rule that
    # `recsys train-images` and the benchmarks use (recsys.vision.recipe): the photos' median
    # short side, at most 64 px on a CPU and 224 px on a GPU; crops 0.7 x that (28 -> 20 px).
    input_size: int | None = None
    train_size: int | None = None
    # Seed of the initialisation, batch order and augmentations.
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"ImageConfig.epochs {self.epochs} must be 1 or more")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"ImageConfig.time_budget {self.time_budget} must be above 0 s")
        for name in ("input_size", "train_size"):
            size = getattr(self, name)
            if size is not None and size < 8:
                raise ValueError(f"ImageConfig.{name} {size} must be 8 px or more (or None)")

    def encoder_config(self):
        """The ``recsys.vision.ImageEncoderConfig`` this describes (imports torch)."""
        from recsys.vision import ImageEncoderConfig
        from recsys.vision import TrainConfig as VisionTrainConfig

        train = VisionTrainConfig(epochs=self.epochs, time_budget=self.time_budget, seed=self.seed)
        return ImageEncoderConfig(
            method=self.method, input_size=self.input_size, train_size=self.train_size, train=train
        )


@dataclass(frozen=True)
class TrainConfig:
    cf: CFConfig = field(default_factory=CFConfig)
    tabular: TabularConfig = field(default_factory=TabularConfig)
    # Initial block weights; the weights stage chooses the ones the bundle uses.
    fusion: FusionConfig = field(default_factory=FusionConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    grid: WeightGrid = field(default_factory=WeightGrid)
    # Share of each user's latest training interactions used to choose block weights;
    # 0 keeps fusion.weights as given.
    validation_share: float = 0.2
    # At most this many users score each weight candidate (a seeded sample): the grid costs
    # users x items x dims per candidate, so large catalogs need a bound.
    validation_users: int = 3000
    # Weights stage: per validation user and block, the best items kept as candidates (the
    # search ranks those, not the whole catalog; see recsys.model.validation.Candidates).
    validation_candidates: int = 200
    # A user whose events span more than this share of the catalog's items, and at least
    # crawler_min_items of them, is taken for a crawler and left out of training (and of the
    # evaluation's split): one bot that viewed every item left no item new, so new items lost
    # their places in feeds, and it set every formerly new item's "also viewed" row. 0 keeps
    # every user. (MovieLens's most prolific rater spans 26% of its films.)
    crawler_share: float = 0.5
    crawler_min_items: int = 1000
    # Use the item title as a text attribute.
    use_titles: bool = True
    # Similar items precomputed per item (the bundle's neighbour table): unfiltered
    # product-page calls with k up to this many are an array slice instead of an index search
    # (items x width x 8 bytes: 40 MB for 100k items). 0 precomputes none.
    neighbours: int = 50
    # Mark the new bundle active.
    activate: bool = True


def from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """``cls(**values)`` without the keys ``cls`` no longer has (configs saved by older code,
    such as the device fields that moved into fit results)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


# What a TrainConfig holds that does not shape the model's figures: how a bundle is served
# (its index, its neighbour table, whether it is made active), and of the collaborative
# model the seed (an evaluation seeds its own) and where ALS runs (the Spark engine's "cg"
# and "exact" solvers fit implicit's objective; "mllib", its own, counts as a model shape).
NOT_SHAPING = ("index", "neighbours", "activate")
CF_NOT_SHAPING = ("random_state", "engine", "spark_solver")


def model_shaping(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a TrainConfig that shape the model, as JSON values, from the config as
    ``dataclasses.asdict`` gives it or a bundle's manifest holds it: every field but
    ``NOT_SHAPING`` and the cf's ``CF_NOT_SHAPING`` (with the cf's ``objective``, "mllib"
    or "implicit", instead; its event weights without those equal to the default weight),
    and the image's ``epochs`` only without a ``time_budget``. A
    field an older manifest lacks takes today's default, as ``from_dict`` gives it."""
    shaped = _overlay(TrainConfig(), _as_json(config))
    for name in NOT_SHAPING:
        shaped.pop(name, None)
    cf = shaped["cf"]
    mllib = cf.get("engine") == "spark" and cf.get("spark_solver") == "mllib"
    for name in CF_NOT_SHAPING:
        cf.pop(name, None)
    cf["objective"] = "mllib" if mllib else "implicit"
    # an event weight equal to the default weighs as if it were not given ({} and
    # {"rating": 1.0} train the same model)
    default = cf.get("default_event_weight", 1.0)
    cf["event_weights"] = {
        event: weight
        for event, weight in (cf.get("event_weights") or {}).items()
        if weight != default
    }
    if shaped["image"].get("time_budget") is not None:
        shaped["image"].pop("epochs", None)
    return shaped


def shaping_differences(trained: dict[str, Any], evaluated: dict[str, Any]) -> dict[str, tuple]:
    """``{dotted field: (trained value, evaluated value)}`` where two ``model_shaping``
    summaries differ, e.g. ``{"cf.factors": (8, 32)}``."""
    differences = {}
    for name in sorted(set(trained) | set(evaluated)):
        a, b = trained.get(name), evaluated.get(name)
        if isinstance(a, dict) and isinstance(b, dict) and name != "event_weights":
            inner = shaping_differences(a, b)
            differences.update({f"{name}.{key}": pair for key, pair in inner.items()})
        elif a != b:
            differences[name] = (a, b)
    return differences


def _as_json(values: Any) -> Any:
    """``values`` as a JSON round trip gives them (tuples as lists), as a manifest holds them."""
    return json.loads(json.dumps(values, default=str))


def _overlay(default: Any, given: Any) -> dict[str, Any]:
    """The fields of config ``default`` (a dataclass) as JSON values, each replaced by the
    one ``given`` (a dict) holds, nested configs field by field (a mapping field, such as
    ``event_weights``, whole)."""
    given = given if isinstance(given, dict) else {}
    out = {}
    for f in dataclasses.fields(default):
        value = getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = _overlay(value, given.get(f.name))
        else:
            out[f.name] = given.get(f.name, _as_json(value))
    return out
