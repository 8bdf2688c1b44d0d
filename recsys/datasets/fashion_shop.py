"""A demo shop built from real Fashion-MNIST photos, with SIMULATED shoppers.

The photos are real (Fashion-MNIST [Xiao et al. 2017], 28x28 grayscale product shots in 10
classes); everything else is made up, deterministically for a seed: brands with price tiers,
prices, departments, listing dates, stock, and the shoppers. Each simulated shopper has hidden
tastes (1-3 preferred classes, a price range, sometimes a favourite colour tone) and browses in
sessions over 90 days: views, some of which lead to a click, a cart and a purchase. A share of
the items are "new": listed after the interaction log ends, so nobody has touched them (cold
start). labels.csv and shoppers.csv hold the hidden truth, for evaluation only.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from recsys.datasets._io import PrepareSummary, atomic_dir, replaceable_out_dir
from recsys.datasets.fashion_mnist import (
    CLASS_NAMES,
    SPLITS,
    FashionMnistSource,
    load_fashion_mnist,
)
from recsys.errors import InvalidInput

log = logging.getLogger(__name__)

# Per class (index = Fashion-MNIST label): department, product words for titles, typical price.
DEPARTMENTS = (
    "tops",
    "bottoms",
    "tops",
    "dresses",
    "outerwear",
    "footwear",
    "tops",
    "footwear",
    "bags",
    "footwear",
)
PRODUCT_WORDS = (
    ("tee", "top", "tank top"),
    ("trousers", "chinos", "slacks"),
    ("pullover", "jumper", "sweater"),
    ("dress", "midi dress", "shift dress"),
    ("coat", "jacket", "parka"),
    ("sandals", "slides", "strappy sandals"),
    ("shirt", "blouse", "overshirt"),
    ("sneakers", "trainers", "runners"),
    ("bag", "tote", "shoulder bag"),
    ("ankle boots", "chelsea boots", "booties"),
)
BASE_PRICE = (19.0, 49.0, 45.0, 59.0, 129.0, 35.0, 39.0, 79.0, 69.0, 99.0)  # EUR, mid tier

# Price multiplier of each brand tier.
TIERS = {"budget": 0.6, "mid": 1.0, "premium": 1.7, "luxury": 3.0}
# (name, tier, classes sold); every class is sold by five or more brands.
BRANDS = (
    ("Nordvik", "mid", (0, 2, 4, 6)),
    ("Basica", "budget", (0, 1, 2, 6)),
    ("Lumen & Co", "premium", (3, 6, 0)),
    ("Kestrel", "mid", (7, 5, 9)),
    ("Aurelle", "luxury", (3, 8, 4)),
    ("Tallow", "budget", (5, 7, 8)),
    ("Marlowe", "premium", (4, 1, 6)),
    ("Fjell", "mid", (4, 9, 2)),
    ("Stride Lab", "mid", (7, 0, 1)),
    ("Velour Row", "luxury", (8, 9, 3)),
    ("Juniper Lane", "budget", (3, 0, 5)),
    ("Corvo", "premium", (9, 7, 8)),
    ("Halden", "mid", (1, 6, 2)),
    ("Pebble", "budget", (0, 1, 7)),
    ("Orla Mae", "mid", (3, 5, 8)),
    ("Greyhaven", "premium", (2, 4, 1)),
    ("Sundry", "budget", (8, 6, 0)),
    ("Atelier Noor", "luxury", (6, 3, 2)),
    ("Trailmark", "mid", (9, 7, 4)),
    ("Wren", "premium", (0, 3, 5)),
)

TONES = ("light", "mid", "dark")
# Fashion-MNIST stores negatives (background 0), so bright pixels are dark fabric. Tone cuts:
# the tertiles of the mean brightness of pixels above FOREGROUND over all 70,000 images.
FOREGROUND = 20
TONE_CUTS = (142.0, 182.0)

PHOTOS = 70_000  # Fashion-MNIST train + test
LOG_END = np.datetime64("2026-11-01", "s")  # the interaction log ends here (exclusive)
_DAY = 86_400  # seconds
# Relative chance of a session starting in each hour of the day (evenings are busiest).
_HOURS = np.array([1, 1, 1, 1, 1, 1, 2, 3, 4, 4, 4, 5, 6, 5, 5, 5, 5, 6, 8, 9, 9, 8, 5, 3.0])
EVENT_WEIGHTS = {"view": 1, "click": 2, "cart": 4, "purchase": 8}


@dataclass(frozen=True)
class ShopConfig:
    # Items (photos drawn from the 70,000) and simulated shoppers.
    items: int = 10_000
    users: int = 2_000
    seed: int = 0
    # Share of items listed after the interaction log ends, with no interactions at all.
    new_share: float = 0.1
    # Days the interaction log covers, and how far back older items were listed.
    days: int = 90
    catalog_days: int = 365
    # Sessions per shopper (log-normal mean, at least 1) and views per session (1 + Poisson).
    sessions: float = 8.0
    views_per_session: float = 6.0
    # Share of views drawn from the shopper's tastes; the rest follow overall popularity.
    taste_share: float = 0.8
    # Funnel: P(click | view) for a perfectly fitting item, P(cart | click), P(purchase | cart).
    click_rate: float = 0.45
    cart_rate: float = 0.3
    purchase_rate: float = 0.5
    # Spread (log scale) of item prices around their tier, and of shoppers' price ranges.
    price_noise: float = 0.25
    price_tolerance: float = 0.45
    # Share of items in stock.
    in_stock: float = 0.95

    def __post_init__(self) -> None:
        _check_config(self)

    @property
    def new_items(self) -> int:
        return round(self.items * self.new_share)


def _check_config(cfg: ShopConfig) -> None:
    if not 2 <= cfg.items <= PHOTOS:
        raise InvalidInput(
            f"items {cfg.items} must be from 2 to {PHOTOS:,} (the Fashion-MNIST photos)"
        )
    if cfg.users < 1:
        raise InvalidInput(f"users {cfg.users} must be 1 or more")
    if not 0 <= cfg.new_share < 1:
        raise InvalidInput(f"new share {cfg.new_share} must be at least 0 and below 1, e.g. 0.1")
    if cfg.items - cfg.new_items < 1:
        raise InvalidInput(
            f"new share {cfg.new_share} of {cfg.items} items leaves no item to interact with; "
            "lower the new share or add items"
        )
    if cfg.days < 1 or cfg.catalog_days <= cfg.days:
        raise InvalidInput(f"days {cfg.days} must be 1 or more and below catalog_days")


@dataclass
class Shop:
    """The tables `prepare_fashion_shop` writes, plus the (N, 28, 28) photos in items' order."""

    items: pd.DataFrame
    interactions: pd.DataFrame
    labels: pd.DataFrame
    shoppers: pd.DataFrame
    images: np.ndarray


def build_shop(images: np.ndarray, labels: np.ndarray, config: ShopConfig) -> Shop:
    """A shop from Fashion-MNIST `images` (N, 28, 28) and `labels` (N,); no files written."""
    if config.items > len(images):
        raise InvalidInput(f"{config.items} items asked for but only {len(images)} photos given")
    rng = np.random.default_rng(config.seed)
    chosen = np.sort(rng.choice(len(images), size=config.items, replace=False))
    catalog = _catalog(images[chosen], labels[chosen], config, rng)
    shoppers = _shoppers(config, rng)
    interactions = _simulate(catalog, shoppers, config, rng)
    return Shop(
        items=_items_table(catalog),
        interactions=interactions,
        labels=pd.DataFrame(
            {
                "item_id": catalog["item_id"],
                "label": catalog["label"],
                "label_name": [CLASS_NAMES[c] for c in catalog["label"]],
            }
        ),
        shoppers=_shoppers_table(shoppers, config.price_tolerance),
        images=images[chosen][catalog["source"].to_numpy()],
    )


# --- the catalog ---------------------------------------------------------------------------


def colour_tones(images: np.ndarray) -> np.ndarray:
    """ "light", "mid" or "dark" per (N, 28, 28) negative image, by its foreground brightness."""
    pixels = images.astype(np.float32)  # (N, 28, 28)
    foreground = pixels > FOREGROUND
    mean = (pixels * foreground).sum(axis=(1, 2)) / np.maximum(foreground.sum(axis=(1, 2)), 1)
    return np.searchsorted(TONE_CUTS, mean)


def _catalog(
    images: np.ndarray, labels: np.ndarray, cfg: ShopConfig, rng: np.random.Generator
) -> pd.DataFrame:
    """One row per item, sorted by listing date (so skus grow with it); `source` = image row."""
    n = len(labels)
    brand = _brands_for(labels, rng)
    tier = np.array([TIERS[BRANDS[b][1]] for b in brand])
    base = np.asarray(BASE_PRICE)[labels]
    price = np.maximum(np.round(base * tier * rng.lognormal(0, cfg.price_noise, n)) - 0.01, 2.99)
    new = np.zeros(n, dtype=bool)
    new[rng.choice(n, size=cfg.new_items, replace=False)] = True
    catalog = pd.DataFrame(
        {
            "source": np.arange(n),
            "label": labels.astype(np.int64),
            "brand": brand,
            "price": price.round(2),
            "tone": colour_tones(images),
            "added": _listing_days(new, cfg, rng),
            "new": new,
            "in_stock": rng.random(n) < cfg.in_stock,
            # Hidden appeal of an item beyond the shopper's tastes (heavy-tailed).
            "popularity": rng.lognormal(0, 1.0, n),
            "word": rng.integers(len(PRODUCT_WORDS[0]), size=n),
        }
    )
    catalog = catalog.sort_values(["added", "source"], kind="stable", ignore_index=True)
    catalog["item_id"] = [f"sku-{i:06d}" for i in range(n)]
    return catalog


def _brands_for(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A brand index per item, uniform among the brands selling its class."""
    brand = np.empty(len(labels), dtype=np.int64)
    for label in range(len(CLASS_NAMES)):
        sellers = np.array([b for b, (_, _, sold) in enumerate(BRANDS) if label in sold])
        rows = np.flatnonzero(labels == label)
        brand[rows] = sellers[rng.integers(len(sellers), size=len(rows))]
    return brand


def _listing_days(new: np.ndarray, cfg: ShopConfig, rng: np.random.Generator) -> np.ndarray:
    """Days (since the epoch) each item was listed: new ones in the week after the log ends."""
    end = int(LOG_END.astype("datetime64[D]").astype(np.int64))
    older = rng.integers(end - cfg.catalog_days, end - 1, size=len(new))
    newer = rng.integers(end, end + 7, size=len(new))
    return np.where(new, newer, older)


def _items_table(catalog: pd.DataFrame) -> pd.DataFrame:
    words = [PRODUCT_WORDS[c][w] for c, w in zip(catalog["label"], catalog["word"], strict=True)]
    brands = [BRANDS[b][0] for b in catalog["brand"]]
    tones = np.asarray(TONES)[catalog["tone"].to_numpy()]
    return pd.DataFrame(
        {
            "item_id": catalog["item_id"],
            "image": [f"images/{item_id}.png" for item_id in catalog["item_id"]],
            "title": [f"{b} {w}, {t}" for b, w, t in zip(brands, words, tones, strict=True)],
            "price": catalog["price"],
            "brand": brands,
            "department": [DEPARTMENTS[c] for c in catalog["label"]],
            "colour_tone": tones,
            "added": pd.to_datetime(catalog["added"], unit="D").dt.strftime("%Y-%m-%d"),
            "in_stock": np.where(catalog["in_stock"], "true", "false"),
        }
    )


# --- the shoppers --------------------------------------------------------------------------


def _shoppers(cfg: ShopConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Hidden tastes: 1-3 classes, a price level (x typical price), maybe a tone, activity."""
    n_classes = rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25], size=cfg.users)
    classes = [
        tuple(sorted(rng.choice(len(CLASS_NAMES), size=k, replace=False))) for k in n_classes
    ]
    tone = np.where(rng.random(cfg.users) < 0.5, rng.integers(len(TONES), size=cfg.users), -1)
    sigma = 0.8  # spread of activity; the mean stays cfg.sessions
    sessions = rng.lognormal(np.log(cfg.sessions) - sigma**2 / 2, sigma, cfg.users)
    return pd.DataFrame(
        {
            "user_id": [f"user-{u:05d}" for u in range(cfg.users)],
            "classes": classes,
            "price_level": np.exp(rng.normal(0, 0.55, cfg.users)),
            "tone": tone,
            "sessions": np.maximum(1, np.round(sessions)).astype(np.int64),
        }
    )


def _shoppers_table(shoppers: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": shoppers["user_id"],
            "labels": ["|".join(map(str, c)) for c in shoppers["classes"]],
            "classes": ["|".join(CLASS_NAMES[i] for i in c) for c in shoppers["classes"]],
            "price_low": (shoppers["price_level"] * np.exp(-tolerance)).round(2),
            "price_high": (shoppers["price_level"] * np.exp(tolerance)).round(2),
            "tone": [TONES[t] if t >= 0 else "" for t in shoppers["tone"]],
            "sessions": shoppers["sessions"],
        }
    )


# --- the simulation ------------------------------------------------------------------------


def _simulate(
    catalog: pd.DataFrame, shoppers: pd.DataFrame, cfg: ShopConfig, rng: np.random.Generator
) -> pd.DataFrame:
    """interactions: user_id, item_id, event, weight, timestamp (ISO 8601, UTC), by time."""
    user, seconds = _views(shoppers, cfg, rng)
    taste = rng.random(len(user)) < cfg.taste_share
    item = _pick_items(user, seconds // _DAY, taste, catalog, shoppers, cfg, rng)
    kept = item >= 0  # a view finds no item only when none was listed yet
    return _funnel(user[kept], item[kept], seconds[kept], taste[kept], catalog, shoppers, cfg, rng)


def _views(
    shoppers: pd.DataFrame, cfg: ShopConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(user, epoch seconds) of every product view, session by session."""
    user = np.repeat(np.arange(len(shoppers)), shoppers["sessions"])  # (S,) one per session
    start_day = rng.integers(cfg.days, size=len(user))
    hour = rng.choice(24, p=_HOURS / _HOURS.sum(), size=len(user))
    log_start = int(LOG_END.astype(np.int64)) - cfg.days * _DAY
    start = log_start + start_day * _DAY + hour * 3600 + rng.integers(3600, size=len(user))
    views = 1 + rng.poisson(cfg.views_per_session - 1, size=len(user))  # (S,)
    session = np.repeat(np.arange(len(user)), views)  # (V,)
    elapsed = np.cumsum(5 + rng.exponential(40.0, size=len(session)))  # a view every ~45 s
    first = np.cumsum(views) - views
    offset = elapsed - np.repeat(elapsed[first], views)
    return user[session], start[session] + offset.astype(np.int64)


def _pick_items(
    user: np.ndarray,
    day: np.ndarray,
    taste: np.ndarray,
    catalog: pd.DataFrame,
    shoppers: pd.DataFrame,
    cfg: ShopConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Catalog row viewed: from the shopper's tastes where `taste`, else by popularity; -1 none."""
    warm = np.flatnonzero(~catalog["new"].to_numpy())  # sorted by listing day
    added, popularity = catalog["added"].to_numpy(), catalog["popularity"].to_numpy()
    item = np.full(len(user), -1)
    item[~taste] = _draw(warm, added[warm], popularity[warm], day[~taste], rng)
    label = _taste_classes(user, shoppers, rng)
    key = np.where(taste, user * len(CLASS_NAMES) + label, -1)
    labels, fit = catalog["label"].to_numpy(), _TasteFit(catalog, shoppers, cfg)
    for group in np.unique(key[taste]):
        rows = np.flatnonzero(key == group)
        u, c = divmod(int(group), len(CLASS_NAMES))
        candidates = warm[labels[warm] == c]
        weights = popularity[candidates] * fit.price(u, candidates) * fit.tone(u, candidates)
        item[rows] = _draw(candidates, added[candidates], weights, day[rows], rng)
    return item


def _taste_classes(user: np.ndarray, shoppers: pd.DataFrame, rng: np.random.Generator):
    """One of its shopper's preferred classes per view, uniformly."""
    classes = shoppers["classes"].to_numpy()
    counts = np.array([len(c) for c in classes])
    picks = (rng.random(len(user)) * counts[user]).astype(np.int64)
    table = np.array([c + (c[0],) * (3 - len(c)) for c in classes])  # (U, 3) padded
    return table[user, picks]


class _TasteFit:
    """How well items fit shoppers' price ranges and favourite tones, each in (0, 1]."""

    def __init__(self, catalog: pd.DataFrame, shoppers: pd.DataFrame, cfg: ShopConfig):
        typical = np.asarray(BASE_PRICE)[catalog["label"].to_numpy()]
        self.log_ratio = np.log(catalog["price"].to_numpy() / typical)  # (N,)
        self.item_tone = catalog["tone"].to_numpy()  # (N,) index into TONES
        self.log_level = np.log(shoppers["price_level"].to_numpy())  # (U,)
        self.user_tone = shoppers["tone"].to_numpy()  # (U,) -1 = any
        self.tolerance = cfg.price_tolerance

    def price(self, user, items: np.ndarray) -> np.ndarray:
        """exp(-z^2 / 2), z = log(price / typical price / shopper's level) / tolerance."""
        z = (self.log_ratio[items] - self.log_level[user]) / self.tolerance
        return np.exp(-(z**2) / 2)

    def tone(self, user: int, items: np.ndarray) -> np.ndarray:
        """1 for the favourite tone (or any, without one), 1/3 for the others."""
        if self.user_tone[user] < 0:
            return np.ones(len(items))
        return np.where(self.item_tone[items] == self.user_tone[user], 1.0, 1 / 3)


def _draw(
    candidates: np.ndarray,
    added: np.ndarray,
    weights: np.ndarray,
    day: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per day, one of `candidates` listed by then (`added` sorted), chance ~ weight; -1 none."""
    if not len(candidates):
        return np.full(len(day), -1)
    cum = np.cumsum(weights)
    listed = np.searchsorted(added, day, side="right")  # candidates listed on or before `day`
    total = np.where(listed > 0, cum[np.maximum(listed - 1, 0)], 0.0)
    position = np.searchsorted(cum, rng.random(len(day)) * total, side="right")
    return np.where(listed > 0, candidates[np.minimum(position, len(candidates) - 1)], -1)


def _funnel(user, item, seconds, taste, catalog, shoppers, cfg, rng) -> pd.DataFrame:
    """Each view may lead to a click, the click to a cart, the cart to a purchase."""
    price_fit = _TasteFit(catalog, shoppers, cfg).price(user, item)
    fit = np.where(taste, 0.4 + 0.6 * price_fit, 0.3)
    click = rng.random(len(user)) < cfg.click_rate * fit
    cart = click & (rng.random(len(user)) < cfg.cart_rate)
    purchase = cart & (rng.random(len(user)) < cfg.purchase_rate)
    times = {"view": seconds}
    times["click"] = times["view"] + rng.integers(3, 30, size=len(user))
    times["cart"] = times["click"] + rng.integers(20, 180, size=len(user))
    times["purchase"] = times["cart"] + rng.integers(60, 900, size=len(user))
    masks = {"view": np.ones(len(user), bool), "click": click, "cart": cart, "purchase": purchase}
    frames = [
        pd.DataFrame({"user": user[m], "item": item[m], "event": e, "seconds": times[e][m]})
        for e, m in masks.items()
    ]
    events = pd.concat(frames, ignore_index=True)
    events = events[events["seconds"] < int(LOG_END.astype(np.int64))]
    events = events.sort_values(["seconds", "user"], kind="stable", ignore_index=True)
    events = events.drop_duplicates(["user", "item", "event", "seconds"], ignore_index=True)
    return _interactions_table(events, catalog, shoppers)


def _interactions_table(
    events: pd.DataFrame, catalog: pd.DataFrame, shoppers: pd.DataFrame
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": shoppers["user_id"].to_numpy()[events["user"]],
            "item_id": catalog["item_id"].to_numpy()[events["item"]],
            "event": events["event"],
            "weight": events["event"].map(EVENT_WEIGHTS),
            "timestamp": pd.to_datetime(events["seconds"], unit="s").dt.strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
        }
    )


# --- files ---------------------------------------------------------------------------------

OUTPUTS = ("images", "items.csv", "interactions.csv", "labels.csv", "shoppers.csv")


def prepare_fashion_shop(
    out_dir: str | os.PathLike[str],
    config: ShopConfig | None = None,
    show_progress: bool = True,
    source: FashionMnistSource | None = None,
) -> PrepareSummary:
    """Write the shop into `out_dir` for `recsys ingest items OUT/items.csv`, replacing it whole.

    images/sku-NNNNNN.png, items.csv, interactions.csv, labels.csv and shoppers.csv (the last
    two for evaluation only). `out_dir` must be new, empty or an earlier shop.
    """
    config = config or ShopConfig()
    out_dir = replaceable_out_dir(out_dir, set(OUTPUTS))
    loaded = [load_fashion_mnist(split, source) for split in SPLITS]  # fail before writing
    images = np.concatenate([split_images for split_images, _ in loaded])  # (70000, 28, 28)
    labels = np.concatenate([split_labels for _, split_labels in loaded])  # (70000,)
    shop = build_shop(images, labels, config)
    with atomic_dir(out_dir) as tmp:
        _write_pngs(shop, tmp / "images", show_progress)
        for name in ("items", "interactions", "labels", "shoppers"):
            getattr(shop, name).to_csv(tmp / f"{name}.csv", index=False)
    log.info("wrote the fashion shop (%d items) to %s", len(shop.items), out_dir)
    paths = {name.removesuffix(".csv"): out_dir / name for name in OUTPUTS}
    counts = {
        "items": len(shop.items),
        "new items": config.new_items,
        "users": shop.interactions["user_id"].nunique(),
        "interactions": len(shop.interactions),
    }
    return PrepareSummary(out_dir=out_dir, paths=paths, counts=counts)


def _write_pngs(shop: Shop, folder: Path, show_progress: bool) -> None:
    folder.mkdir()
    progress = tqdm(shop.images, desc="PNGs", unit="img", disable=not show_progress)
    for item_id, image in zip(shop.items["item_id"], progress, strict=True):
        Image.fromarray(image).save(folder / f"{item_id}.png")
