"""A SYNTHETIC long-tail shop of any size, generated set-wise with NumPy and Arrow.

Nothing here is real except, optionally, the photos (Fashion-MNIST [Xiao et al. 2017], reused
across many items). The catalog has what real marketplace logs have: Zipf-like item
popularity, sellers and brands numbering in the thousands (about one per 50 and per 200
items), a category tree, multi-valued tags, free-text titles whose words follow the brand and
the category, prices and listing dates. Each simulated shopper has heavy-tailed activity and
hidden tastes for a few specific sellers, brands, title words and categories; most of their
views follow those tastes, the rest follow popularity, in sessions over 90 days, and some views
lead to a cart and a purchase. Identities of high-cardinality values therefore carry taste, as
in the real long-tail catalogs that content models must handle. The newest items are listed
after the log ends and have no interactions (cold start); `next_week` holds the week after the
log, in which shoppers also find those new items, so cold-item recall can be measured.

Costs grow linearly: every step works on whole arrays, and interactions are generated and
written in blocks of users, so memory stays bounded by the block and the catalog.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image
from tqdm import tqdm

from recsys.datasets._io import PrepareSummary, atomic_dir, replaceable_out_dir
from recsys.datasets.fashion_mnist import SPLITS, FashionMnistSource, load_fashion_mnist
from recsys.datasets.fashion_shop import BASE_PRICE, DEPARTMENTS, LOG_END, PRODUCT_WORDS
from recsys.errors import InvalidInput

log = logging.getLogger(__name__)

FORMATS = ("csv", "parquet")
CHANNELS = ("seller", "brand", "word", "category")  # taste channels; the rest is popularity
EVENTS = ("view", "cart", "purchase")
EVENT_WEIGHTS = (1, 4, 8)
AUDIENCES = ("women", "men", "kids", "sport")  # top of the category tree
AUDIENCE_SHARE = (0.45, 0.3, 0.1, 0.15)
COLOURS = (
    "black", "white", "grey", "navy", "blue", "red", "green", "olive", "beige", "brown",
    "pink", "yellow", "burgundy", "cream",
)  # fmt: skip
TAGS = (
    "organic",
    "recycled",
    "vegan",
    "handmade",
    "waterproof",
    "slim-fit",
    "oversized",
    "limited-edition",
    "bestseller",
    "sale",
    "new-season",
    "fair-trade",
    "stretch",
    "lightweight",
    "breathable",
    "vintage",
    "unisex",
    "petite",
    "tall",
    "plus-size",
    "machine-washable",
    "linen",
    "cotton",
    "wool",
    "leather",
    "denim",
    "silk",
    "cashmere",
    "merino",
    "gift-idea",
    "eco",
)  # fmt: skip; a prime count, so stepping through it never repeats a tag within an item
_CONSONANTS = (*"bcdfghjklmnprstvz", "br", "st", "th", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "y")
_SELLER_SUFFIXES = ("shop", "store", "outlet", "boutique", "trading", "goods", "market", "house")
# Relative chance of a session starting in each hour of the day (evenings are busiest).
SESSION_HOURS = (1, 1, 1, 1, 1, 1, 2, 3, 4, 4, 4, 5, 6, 5, 5, 5, 5, 6, 8, 9, 9, 8, 5, 3)
_DAY = 86_400  # seconds
_CLASSES = len(BASE_PRICE)  # Fashion-MNIST classes
_BRAND_CLASSES = 3  # classes each brand makes
_SIGNATURE_WORDS = 4  # title words typical of each brand


@dataclass(frozen=True)
class SyntheticShopConfig:
    # Size: items (the newest new_share of them have no interactions), shoppers, events.
    items: int = 100_000
    users: int = 50_000
    events: int = 1_000_000
    seed: int = 0
    new_share: float = 0.05
    # Write image paths and PNGs of Fashion-MNIST photos, at most `photos` distinct ones.
    images: bool = True
    photos: int = 5_000
    # File format of items, interactions and next_week: "csv" or "parquet".
    format: str = "csv"
    # One seller per items_per_seller items (at most max_sellers), likewise brands and title
    # words; their sizes are Zipf-like with exponent size_exponent.
    items_per_seller: int = 50
    max_sellers: int = 50_000
    items_per_brand: int = 200
    max_brands: int = 20_000
    items_per_word: int = 40
    max_words: int = 50_000
    size_exponent: float = 1.0
    # Item popularity ~ rank ** -popularity_exponent over a random ranking.
    popularity_exponent: float = 1.0
    # Events per shopper: multinomial over log-normal activity with this spread (log scale).
    activity_sigma: float = 1.3
    # Share of views drawn from a favourite seller, brand, title word, category (CHANNELS);
    # the remaining share follows overall popularity.
    taste_shares: tuple[float, ...] = (0.3, 0.2, 0.15, 0.1)
    # Mean views per session; days the log covers; how far back older items were listed.
    session_views: float = 5.0
    days: int = 90
    catalog_days: int = 730
    # P(cart | view) when the view followed a taste or popularity; P(purchase | cart).
    cart_rate_taste: float = 0.15
    cart_rate_other: float = 0.05
    purchase_rate: float = 0.4
    # Events in the week after the log (next_week), as a share of `events`; new items' appeal
    # in that week, as a multiple of their popularity (they are featured on launch).
    next_week_share: float = 0.05
    new_boost: float = 5.0
    # Events generated and written per block: bounds memory at any size.
    block_events: int = 2_000_000

    def __post_init__(self) -> None:
        _check_config(self)

    @property
    def new_items(self) -> int:
        return round(self.items * self.new_share)

    def count(self, per: int, cap: int, least: int) -> int:
        """Distinct values of a field with one per `per` items, from `least` to `cap`."""
        return int(np.clip(self.items // per, least, cap))


def _check_config(cfg: SyntheticShopConfig) -> None:
    if cfg.items < 2 or cfg.users < 1 or cfg.events < 1:
        raise InvalidInput(
            f"items {cfg.items}, users {cfg.users}, events {cfg.events}: pass at least 2 items, "
            "1 user and 1 event"
        )
    if not 0 <= cfg.new_share < 1 or cfg.items - cfg.new_items < 1:
        raise InvalidInput(
            f"new share {cfg.new_share} of {cfg.items} items must be at least 0 and leave an "
            "item to interact with; lower it, e.g. 0.05"
        )
    if cfg.format not in FORMATS:
        raise InvalidInput(f"format {cfg.format!r} is not one of {', '.join(FORMATS)}")
    if len(cfg.taste_shares) != len(CHANNELS) or min(cfg.taste_shares) < 0:
        raise InvalidInput(f"taste_shares must be {len(CHANNELS)} shares ({', '.join(CHANNELS)})")
    if sum(cfg.taste_shares) > 1:
        raise InvalidInput(f"taste_shares {cfg.taste_shares} add up to more than 1")
    if not _CLASSES <= cfg.photos <= 70_000 or cfg.days < 1 or cfg.block_events < 1:
        raise InvalidInput("photos must be 10 to 70,000; days and block_events at least 1")


# --- drawing items by group ----------------------------------------------------------------


@dataclass(frozen=True)
class Pools:
    """Items grouped (by seller, brand, word, ...), to draw an item of a group by weight."""

    items: np.ndarray  # (P,) item of each (group, item) pair, pairs sorted by group
    cum: np.ndarray  # (P,) cumulative weight of the sorted pairs
    low: np.ndarray  # (G,) cumulative weight before each group's first pair
    high: np.ndarray  # (G,) cumulative weight after each group's last pair

    @classmethod
    def build(
        cls, groups: np.ndarray, items: np.ndarray, weights: np.ndarray, n_groups: int
    ) -> Pools:
        order = np.argsort(groups, kind="stable")
        cum = np.cumsum(weights[order], dtype=np.float64)
        bounds = np.searchsorted(groups[order], np.arange(n_groups + 1))  # (G + 1,)
        edges = np.concatenate([[0.0], cum])[bounds]
        return cls(items=items[order], cum=cum, low=edges[:-1], high=edges[1:])

    @property
    def totals(self) -> np.ndarray:
        return self.high - self.low  # (G,)

    def draw(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One item per entry of `groups`, by weight within the group; -1 for empty groups."""
        low, high = self.low[groups], self.high[groups]
        point = low + rng.random(len(groups)) * (high - low)
        picked = np.minimum(np.searchsorted(self.cum, point, side="right"), len(self.cum) - 1)
        return np.where(high > low, self.items[picked], -1)


def zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) weights rank ** -exponent over a random ranking of n things."""
    return (1.0 + rng.permutation(n)) ** -exponent


def draw_by_weight(weights: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` indices drawn with replacement in proportion to `weights`."""
    cum = np.cumsum(weights, dtype=np.float64)
    return np.minimum(np.searchsorted(cum, rng.random(size) * cum[-1], side="right"), len(cum) - 1)


# --- names ---------------------------------------------------------------------------------


def pseudo_words(n: int, rng: np.random.Generator) -> pa.Array:
    """`n` distinct made-up lowercase words of three syllables ("tavelo", "brumiky")."""
    syllables = pa.array([c + v for c in _CONSONANTS for v in _VOWELS])
    base = len(syllables)
    codes = rng.choice(base**3, size=n, replace=False)
    parts = [pc.take(syllables, (codes // base**k) % base) for k in range(3)]
    return pc.binary_join_element_wise(*parts, "")


def numbered(prefix: str, n: int) -> pa.Array:
    """ "prefix0000123" ids, zero-padded to the width of n - 1 (at least 6 digits)."""
    width = max(6, len(str(n - 1)))
    digits = pc.utf8_lpad(pa.array(np.arange(n)).cast(pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


@dataclass(frozen=True)
class Names:
    words: pa.Array  # (W,) title vocabulary, lowercase
    brands: pa.Array  # (B,) capitalised
    sellers: pa.Array  # (S,) "tavelo-outlet"


def make_names(cfg: SyntheticShopConfig, rng: np.random.Generator) -> Names:
    n_words = cfg.count(cfg.items_per_word, cfg.max_words, least=20)
    n_brands = cfg.count(cfg.items_per_brand, cfg.max_brands, least=4)
    n_sellers = cfg.count(cfg.items_per_seller, cfg.max_sellers, least=5)
    words = pseudo_words(n_words + n_brands + n_sellers, rng)  # disjoint stems per field
    suffixes = pc.take(
        pa.array(_SELLER_SUFFIXES), rng.integers(len(_SELLER_SUFFIXES), size=n_sellers)
    )
    return Names(
        words=words[:n_words],
        brands=pc.utf8_capitalize(words[n_words : n_words + n_brands]),
        sellers=pc.binary_join_element_wise(words[n_words + n_brands :], suffixes, "-"),
    )


# --- the catalog ---------------------------------------------------------------------------

LEAVES = len(AUDIENCES) * _CLASSES * len(PRODUCT_WORDS[0])  # category tree leaves


@dataclass(frozen=True)
class Catalog:
    """One entry per item in sku order, which is listing order; the new items come last."""

    names: Names
    item_ids: pa.Array  # (N,) "sku-0000123"
    new: np.ndarray  # (N,) bool: listed after the log ends
    label: np.ndarray  # (N,) Fashion-MNIST class
    leaf: np.ndarray  # (N,) category leaf: (audience * classes + class) * 3 + product word
    seller: np.ndarray  # (N,)
    brand: np.ndarray  # (N,)
    words: np.ndarray  # (N, 2) style words of the title
    colour: np.ndarray  # (N,)
    tags: np.ndarray  # (N, 3) tag indices, -1 where none
    price: np.ndarray  # (N,) EUR
    added: np.ndarray  # (N,) listing day, days since the epoch
    popularity: np.ndarray  # (N,) Zipf-like appeal
    in_stock: np.ndarray  # (N,) bool, 95% true

    @property
    def n_groups(self) -> dict[str, int]:
        words, brands, sellers = (
            len(a) for a in (self.names.words, self.names.brands, self.names.sellers)
        )
        return {"seller": sellers, "brand": brands, "word": words, "category": LEAVES}


def make_catalog(cfg: SyntheticShopConfig, names: Names, rng: np.random.Generator) -> Catalog:
    n = cfg.items
    seller = draw_by_weight(zipf_weights(len(names.sellers), cfg.size_exponent, rng), n, rng)
    label = _labels_for(seller, len(names.sellers), rng)
    brand = _brands_for(label, len(names.brands), cfg, rng)
    product = rng.integers(len(PRODUCT_WORDS[0]), size=n)
    audience = draw_by_weight(np.asarray(AUDIENCE_SHARE), n, rng)
    return Catalog(
        names=names,
        item_ids=numbered("sku-", n),
        new=np.arange(n) >= n - cfg.new_items,
        label=label,
        leaf=(audience * _CLASSES + label) * len(PRODUCT_WORDS[0]) + product,
        seller=seller,
        brand=brand,
        words=_title_words(brand, len(names.brands), len(names.words), cfg, rng),
        colour=rng.integers(len(COLOURS), size=n),
        tags=_tags_for(brand, len(names.brands), rng),
        price=_prices(label, brand, len(names.brands), rng),
        added=_listing_days(cfg, rng),
        popularity=zipf_weights(n, cfg.popularity_exponent, rng),
        in_stock=rng.random(n) < 0.95,
    )


def _labels_for(seller: np.ndarray, n_sellers: int, rng: np.random.Generator) -> np.ndarray:
    """Each seller specialises in two classes; 85% of its items are of those."""
    specialities = rng.integers(_CLASSES, size=(n_sellers, 2))
    own = specialities[seller, rng.integers(2, size=len(seller))]
    return np.where(rng.random(len(seller)) < 0.85, own, rng.integers(_CLASSES, size=len(seller)))


def _brands_for(
    label: np.ndarray, n_brands: int, cfg: SyntheticShopConfig, rng: np.random.Generator
) -> np.ndarray:
    """Each brand makes three neighbouring classes; an item's brand is drawn among its class's."""
    offset = rng.integers(_CLASSES)
    made = (np.arange(n_brands * _BRAND_CLASSES) + offset) % _CLASSES  # every class covered
    made = made.reshape(n_brands, _BRAND_CLASSES)[rng.permutation(n_brands)]  # (B, 3)
    weights = zipf_weights(n_brands, cfg.size_exponent, rng)
    pools = Pools.build(
        made.ravel(), np.repeat(np.arange(n_brands), _BRAND_CLASSES),
        np.repeat(weights, _BRAND_CLASSES), _CLASSES,
    )  # fmt: skip
    return pools.draw(label, rng)


def _title_words(
    brand: np.ndarray,
    n_brands: int,
    n_words: int,
    cfg: SyntheticShopConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """(N, 2) style words: the first from the brand's signature words, the second half the time
    (-1: none, rather than the first word twice)."""
    popular = zipf_weights(n_words, cfg.size_exponent, rng)
    signature = draw_by_weight(popular, n_brands * _SIGNATURE_WORDS, rng)
    signature = signature.reshape(n_brands, _SIGNATURE_WORDS)  # (B, 4)
    first = signature[brand, rng.integers(_SIGNATURE_WORDS, size=len(brand))]
    second = np.where(
        rng.random(len(brand)) < 0.5,
        signature[brand, rng.integers(_SIGNATURE_WORDS, size=len(brand))],
        draw_by_weight(popular, len(brand), rng),
    )
    return np.stack([first, np.where(second == first, -1, second)], axis=1)


def _tags_for(brand: np.ndarray, n_brands: int, rng: np.random.Generator) -> np.ndarray:
    """(N, 3) distinct tags (0-3 per item, -1 for none), starting from the brand's own tag."""
    n, n_tags = len(brand), len(TAGS)
    start = np.where(
        rng.random(n) < 0.6,
        rng.integers(n_tags, size=n_brands)[brand],
        rng.integers(n_tags, size=n),
    )
    step = 1 + rng.integers(n_tags - 1, size=n)  # n_tags is prime: no repeats within 3 steps
    tags = (start[:, None] + step[:, None] * np.arange(3)) % n_tags  # (N, 3)
    count = rng.choice(4, p=[0.3, 0.35, 0.25, 0.1], size=n)
    return np.where(np.arange(3) < count[:, None], tags, -1)


def _prices(
    label: np.ndarray, brand: np.ndarray, n_brands: int, rng: np.random.Generator
) -> np.ndarray:
    """Typical price of the class x the brand's price level x item noise, ending in .99."""
    level = rng.lognormal(0.0, 0.5, size=n_brands)
    price = np.asarray(BASE_PRICE)[label] * level[brand] * rng.lognormal(0.0, 0.25, len(label))
    return np.maximum(np.round(price) - 0.01, 0.99)


def _listing_days(cfg: SyntheticShopConfig, rng: np.random.Generator) -> np.ndarray:
    """Older items listed before the log starts, by sku; new ones on the day the log ends."""
    end = int(LOG_END.astype("datetime64[D]").astype(np.int64))
    start = end - cfg.days
    old = np.sort(rng.integers(start - cfg.catalog_days, start, size=cfg.items - cfg.new_items))
    return np.concatenate([old, np.full(cfg.new_items, end)])


def channel_pools(catalog: Catalog, weights: np.ndarray) -> dict[str, Pools]:
    """Pools to draw an item by popularity ("popular") or from a seller, brand, word, leaf."""
    n = len(weights)
    items = np.arange(n)
    groups = catalog.n_groups
    return {
        "popular": Pools.build(np.zeros(n, np.int64), items, weights, 1),
        "seller": Pools.build(catalog.seller, items, weights, groups["seller"]),
        "brand": Pools.build(catalog.brand, items, weights, groups["brand"]),
        "word": Pools.build(
            catalog.words.T.ravel(), np.tile(items, 2), np.tile(weights, 2), groups["word"]
        ),
        "category": Pools.build(catalog.leaf, items, weights, groups["category"]),
    }


# --- the shoppers --------------------------------------------------------------------------

# Favourites per channel: at most this many, and how strongly popular groups attract fans
# (totals ** exponent; below 1 spreads fans into the tail).
_FAVOURITES = {"seller": (3, 0.5), "brand": (2, 0.5), "word": (2, 0.5), "category": (2, 1.0)}


@dataclass(frozen=True)
class Shoppers:
    ids: pa.Array  # (U,) "user-000123"
    events: np.ndarray  # (U,) events in the log
    next_week: np.ndarray  # (U,) events in the week after it
    favourites: dict[str, np.ndarray]  # channel -> (U, 3) group ids, the first `count` used
    count: dict[str, np.ndarray]  # channel -> (U,) favourites used, 1 or more


def make_shoppers(
    cfg: SyntheticShopConfig, pools: dict[str, Pools], rng: np.random.Generator
) -> Shoppers:
    """Heavy-tailed activity and favourite sellers, brands, words and categories per shopper."""
    activity = rng.lognormal(0.0, cfg.activity_sigma, size=cfg.users)
    share = activity / activity.sum()
    favourites, count = {}, {}
    for channel, (most, exponent) in _FAVOURITES.items():  # four channels
        weights = pools[channel].totals ** exponent
        favourites[channel] = draw_by_weight(weights, cfg.users * 3, rng).reshape(cfg.users, 3)
        count[channel] = 1 + rng.integers(most, size=cfg.users)
    return Shoppers(
        ids=numbered("user-", cfg.users),
        events=rng.multinomial(cfg.events, share),
        next_week=rng.multinomial(round(cfg.events * cfg.next_week_share), share),
        favourites=favourites,
        count=count,
    )


# --- the interactions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Sessions start on one of `days` days from `start` (epoch seconds), none after `end`."""

    start: int
    days: int
    end: int


def log_windows(cfg: SyntheticShopConfig) -> tuple[Window, Window]:
    """The interaction log, and the week after it (next_week)."""
    end = int(LOG_END.astype(np.int64))
    margin = 4 * 3600  # no session starts later: sessions end within the window
    return (
        Window(start=end - cfg.days * _DAY, days=cfg.days, end=end - margin),
        Window(start=end, days=7, end=end + 7 * _DAY - margin),
    )


def block_events(
    users: np.ndarray,
    counts: np.ndarray,
    shoppers: Shoppers,
    pools: dict[str, Pools],
    cfg: SyntheticShopConfig,
    window: Window,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Exactly counts[j] events of each users[j]: user, item, step (0 view, 1 cart, 2 purchase)
    and epoch seconds, sorted by user and time, no two of a user at the same second."""
    local = np.repeat(np.arange(len(users)), counts)  # (V,) at most one view per event slot
    item, taste = _views(users[local], shoppers, pools, cfg, rng)
    steps = 1 + _funnel(taste, cfg, rng)  # (V,) events each view leads to
    kept, steps = _fill_slots(local, steps, counts)
    user = users[local[kept]]
    seconds = _view_times(user, window, cfg, rng)
    return _expand(user, item[kept], seconds, steps, rng)


def _views(
    user: np.ndarray,
    shoppers: Shoppers,
    pools: dict[str, Pools],
    cfg: SyntheticShopConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(item, followed a taste) per view: a favourite's item, or by popularity."""
    shares = np.array([*cfg.taste_shares, max(0.0, 1.0 - sum(cfg.taste_shares))])
    channel = draw_by_weight(shares, len(user), rng)  # (V,) index into CHANNELS, or popular
    item = np.full(len(user), -1, dtype=np.int64)
    for index, name in enumerate(CHANNELS):  # four channels
        rows = np.flatnonzero(channel == index)
        fans = user[rows]
        which = (rng.random(len(rows)) * shoppers.count[name][fans]).astype(np.int64)
        item[rows] = pools[name].draw(shoppers.favourites[name][fans, which], rng)
    taste = item >= 0
    rest = np.flatnonzero(~taste)  # the popularity share, and favourites with nothing to show
    item[rest] = pools["popular"].draw(np.zeros(len(rest), np.int64), rng)
    return item, taste


def _funnel(taste: np.ndarray, cfg: SyntheticShopConfig, rng: np.random.Generator) -> np.ndarray:
    """Events after each view: 1 for a cart, 2 for a cart and a purchase, else 0."""
    cart_rate = np.where(taste, cfg.cart_rate_taste, cfg.cart_rate_other)
    cart = rng.random(len(taste)) < cart_rate
    purchase = cart & (rng.random(len(taste)) < cfg.purchase_rate)
    return cart.astype(np.int64) + purchase


def _fill_slots(
    local: np.ndarray, steps: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Keep each user's first views whose events fill exactly counts[user] slots; the last
    kept view's funnel is cut short where needed. Returns (kept mask, steps of kept views)."""
    if len(local) == 0:
        return np.zeros(0, dtype=bool), steps
    first = np.cumsum(counts) - counts  # (B,) each user's first view
    start = np.cumsum(steps) - steps  # (V,) events before each view, all users
    within = start - start[np.minimum(first, len(start) - 1)][local]  # (V,) in its user
    room = counts[local] - within
    kept = room > 0
    return kept, np.minimum(steps, room)[kept]


def _run_position(user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is the first of its user, position within its user) for a user-sorted array."""
    first = np.ones(len(user), dtype=bool)
    first[1:] = user[1:] != user[:-1]
    index = np.arange(len(user))
    return first, index - np.maximum.accumulate(np.where(first, index, 0))


def _view_times(
    user: np.ndarray, window: Window, cfg: SyntheticShopConfig, rng: np.random.Generator
) -> np.ndarray:
    """Epoch seconds of each view: users' views split into sessions (at most 100 views each)
    that start at a random day and hour, one view every ~45 s."""
    if len(user) == 0:
        return np.zeros(0, dtype=np.int64)
    first, within = _run_position(user)
    new_session = first | (rng.random(len(user)) < 1 / cfg.session_views) | (within % 100 == 0)
    session = np.cumsum(new_session) - 1  # (V,)
    n = int(session[-1]) + 1
    hours = draw_by_weight(np.asarray(SESSION_HOURS, dtype=np.float64), n, rng)
    start = window.start + rng.integers(window.days, size=n) * _DAY + hours * 3600
    start = np.minimum(start + rng.integers(3600, size=n), window.end)  # (S,)
    gaps = np.where(new_session, 0.0, 5.0 + rng.exponential(40.0, size=len(user)))
    elapsed = np.cumsum(gaps)
    offset = elapsed - elapsed[np.flatnonzero(new_session)][session]
    return start[session] + offset.astype(np.int64)


def _expand(
    user: np.ndarray,
    item: np.ndarray,
    seconds: np.ndarray,
    steps: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Each view's events (view, then cart 20-180 s later, purchase 1-15 min after that)."""
    view = np.repeat(np.arange(len(steps)), steps)  # (E,)
    step = np.arange(len(view)) - (np.cumsum(steps) - steps)[view]  # (E,) 0, 1, 2
    to_cart = rng.integers(20, 181, size=len(steps))
    to_buy = to_cart + rng.integers(60, 901, size=len(steps))
    delay = np.stack([np.zeros_like(to_cart), to_cart, to_buy], axis=1)[view, step]
    times = seconds[view] + delay
    order = np.lexsort((times, user[view]))
    user = user[view][order]
    return {
        "user": user,
        "item": item[view][order],
        "step": step[order],
        "seconds": _distinct_seconds(user, times[order]),
    }


def _distinct_seconds(user: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Move a user's tied events a second apart, keeping order: each event is at least one
    second after the user's previous one. `user` and then `seconds` are sorted."""
    _, within = _run_position(user)
    offset = user.astype(np.int64) << 32  # seconds < 2**32: users never mix
    return np.maximum.accumulate(offset + seconds - within) - offset + within


# --- tables --------------------------------------------------------------------------------

EVENT_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("event", pa.string()),
        ("weight", pa.int64()),
        ("timestamp", pa.timestamp("s")),  # UTC; zone-less, which CSV writes 30x faster
    ]
)


def events_table(events: dict[str, np.ndarray], catalog: Catalog, shoppers: Shoppers) -> pa.Table:
    return pa.table(
        [
            pc.take(shoppers.ids, events["user"]),
            pc.take(catalog.item_ids, events["item"]),
            pc.take(pa.array(EVENTS), events["step"]),
            pc.take(pa.array(EVENT_WEIGHTS, pa.int64()), events["step"]),
            pa.array(events["seconds"], pa.timestamp("s")),
        ],
        schema=EVENT_SCHEMA,
    )


def _leaf_names() -> pa.Array:
    """ "women/footwear/ankle-boots", ... indexed like Catalog.leaf."""
    return pa.array(
        [
            f"{audience}/{DEPARTMENTS[label]}/{word.replace(' ', '-')}"
            for audience in AUDIENCES
            for label in range(_CLASSES)
            for word in PRODUCT_WORDS[label]
        ]
    )


def _joined(values: pa.Array, index: np.ndarray, used: np.ndarray) -> pa.Array:
    """Per row, values[index[row, used[row]]] joined by "|" (a multi-valued cell)."""
    offsets = np.concatenate([[0], np.cumsum(used.sum(axis=1))]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), pc.take(values, index[used]))
    return pc.binary_join(lists, "|")


def items_table(catalog: Catalog, photo: np.ndarray | None) -> pa.Table:
    """item_id, image (when photos are given), title, price, brand, seller, category, tags,
    added, in_stock."""
    names = catalog.names
    brand = pc.take(names.brands, catalog.brand)
    products = pa.array([word for words in PRODUCT_WORDS for word in words])
    second = catalog.words[:, 1]
    title = pc.binary_join_element_wise(
        brand,
        pc.take(names.words, catalog.words[:, 0]),
        pc.take(names.words, pa.array(second, mask=second < 0)),
        pc.take(pa.array(COLOURS), catalog.colour),
        pc.take(products, catalog.leaf % (_CLASSES * len(PRODUCT_WORDS[0]))),
        " ",
        null_handling="skip",
    )
    columns = {"item_id": catalog.item_ids}
    if photo is not None:
        columns["image"] = photo_paths(photo)
    columns |= {
        "title": title,
        "price": pa.array(catalog.price),
        "brand": brand,
        "seller": pc.take(names.sellers, catalog.seller),
        "category": pc.take(_leaf_names(), catalog.leaf),
        "tags": _joined(pa.array(TAGS), catalog.tags, catalog.tags >= 0),
        "added": pa.array(catalog.added.astype("datetime64[D]")),
        "in_stock": pa.array(catalog.in_stock),
    }
    return pa.table(columns)


_PLURAL = {"seller": "sellers", "brand": "brands", "word": "words", "category": "categories"}


def shoppers_table(catalog: Catalog, shoppers: Shoppers) -> pa.Table:
    """user_id, events in the log, and the favourites that drove them (for evaluation only)."""
    values = {
        "seller": catalog.names.sellers,
        "brand": catalog.names.brands,
        "word": catalog.names.words,
        "category": _leaf_names(),
    }
    columns = {"user_id": shoppers.ids, "events": pa.array(shoppers.events)}
    for channel, names in values.items():
        used = np.arange(3) < shoppers.count[channel][:, None]  # (U, 3)
        columns[_PLURAL[channel]] = _joined(names, shoppers.favourites[channel], used)
    return pa.table(columns)


# --- photos --------------------------------------------------------------------------------


def photo_paths(photo: np.ndarray) -> pa.Array:
    """ "images/01234.png" for Fashion-MNIST photo 1234 (train then test numbering)."""
    digits = pc.utf8_lpad(pa.array(photo).cast(pa.string()), 5, "0")
    return pc.binary_join_element_wise("images/", digits, ".png", "")


def pick_photos(
    catalog: Catalog, labels: np.ndarray, cfg: SyntheticShopConfig, rng: np.random.Generator
) -> np.ndarray:
    """(N,) Fashion-MNIST photo of each item, of the item's class, from a pool of at most
    cfg.photos photos (so at most that many PNG files); many items share a photo."""
    per_class = cfg.photos // _CLASSES
    pools = np.stack(
        [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(_CLASSES)]
    )  # (10, P): every class has 6,000+ photos
    pick = draw_by_weight(zipf_weights(per_class, 0.5, rng), len(catalog.label), rng)
    return pools[catalog.label, pick]


def write_pngs(images: np.ndarray, photos: np.ndarray, folder: Path, show_progress: bool) -> None:
    folder.mkdir()
    for photo in tqdm(photos, desc="PNGs", unit="img", disable=not show_progress):
        Image.fromarray(images[photo]).save(folder / f"{photo:05d}.png")


def load_photos(source: FashionMnistSource | None) -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 Fashion-MNIST (images (N, 28, 28), labels (N,)), train then test."""
    loaded = [load_fashion_mnist(split, source) for split in SPLITS]
    return np.concatenate([i for i, _ in loaded]), np.concatenate([y for _, y in loaded])


# --- files ---------------------------------------------------------------------------------

OUTPUTS = ("images", "items", "interactions", "next_week", "shoppers.csv")
# What an earlier run left in --out, replaced whole by the next one.
_OURS = {"images", "shoppers.csv"} | {f"{n}.{f}" for n in OUTPUTS[1:4] for f in FORMATS}


@contextmanager
def table_writer(path: Path, schema: pa.Schema) -> Iterator[pa.RecordBatchWriter]:
    """A CSV or Parquet writer (by `path`'s suffix) that tables can be written to in blocks."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        writer = pq.ParquetWriter(path, schema)
    else:
        import pyarrow.csv as pa_csv

        options = pa_csv.WriteOptions(quoting_style="needed")
        writer = pa_csv.CSVWriter(path, schema, write_options=options)
    try:
        yield writer
    finally:
        writer.close()


def write_table(table: pa.Table, path: Path) -> None:
    with table_writer(path, table.schema) as writer:
        writer.write_table(table)


def user_blocks(counts: np.ndarray, block_events: int) -> list[tuple[int, int]]:
    """Consecutive user ranges [start, stop) holding about `block_events` events each."""
    cum = np.cumsum(counts)
    targets = np.arange(block_events, int(cum[-1]), block_events)
    cuts = np.unique(np.concatenate([[0], np.searchsorted(cum, targets) + 1, [len(counts)]]))
    return list(zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True))


@dataclass(frozen=True)
class Shop:
    config: SyntheticShopConfig
    catalog: Catalog
    shoppers: Shoppers

    def weights(self, part: int) -> np.ndarray:
        """(N,) appeal of each item in the log (part 0: new items have none) and in the week
        after it (part 1: new items boosted)."""
        catalog = self.catalog
        boost = 0.0 if part == 0 else self.config.new_boost
        return catalog.popularity * np.where(catalog.new, boost, 1.0)


def build_shop(config: SyntheticShopConfig) -> Shop:
    """The catalog and the shoppers; interactions are made block by block as they are written."""
    names = make_names(config, np.random.default_rng((config.seed, 0)))
    catalog = make_catalog(config, names, np.random.default_rng((config.seed, 1)))
    log_pools = channel_pools(catalog, catalog.popularity * ~catalog.new)
    shoppers = make_shoppers(config, log_pools, np.random.default_rng((config.seed, 2)))
    return Shop(config=config, catalog=catalog, shoppers=shoppers)


def write_events(shop: Shop, part: int, path: Path, progress: tqdm) -> None:
    """The log (part 0) or the week after it (part 1) into `path`, one block of users at a time."""
    cfg, shoppers = shop.config, shop.shoppers
    window = log_windows(cfg)[part]
    counts = shoppers.events if part == 0 else shoppers.next_week
    pools = channel_pools(shop.catalog, shop.weights(part))
    with table_writer(path, EVENT_SCHEMA) as writer:
        for block, (start, stop) in enumerate(user_blocks(counts, cfg.block_events)):
            rng = np.random.default_rng((cfg.seed, 4 + part, block))
            users = np.arange(start, stop)
            events = block_events(users, counts[start:stop], shoppers, pools, cfg, window, rng)
            writer.write_table(events_table(events, shop.catalog, shoppers))
            progress.update(len(events["user"]))


def prepare_synthetic_shop(
    out_dir: str | os.PathLike[str],
    config: SyntheticShopConfig | None = None,
    show_progress: bool = True,
    source: FashionMnistSource | None = None,
) -> PrepareSummary:
    """Write a synthetic shop into `out_dir`, replacing it whole, for `recsys ingest`.

    items, interactions and next_week (.csv or .parquet), shoppers.csv (hidden tastes, for
    evaluation only) and, with images, images/NNNNN.png. `out_dir` must be new, empty or an
    earlier shop.
    """
    config = config or SyntheticShopConfig()
    out_dir = replaceable_out_dir(out_dir, _OURS)
    photos = load_photos(source) if config.images else None  # fail before writing
    shop = build_shop(config)
    ext = "." + config.format
    with atomic_dir(out_dir) as tmp:
        used = _write_catalog(shop, photos, tmp, ext, show_progress)
        total = int(shop.shoppers.events.sum() + shop.shoppers.next_week.sum())
        with tqdm(total=total, desc="events", unit="ev", disable=not show_progress) as progress:
            for part, name in enumerate(("interactions", "next_week")):
                write_events(shop, part, tmp / (name + ext), progress)
    log.info("wrote the synthetic shop (%d items) to %s", config.items, out_dir)
    return _summary(shop, out_dir, ext, used)


def _write_catalog(
    shop: Shop,
    photos: tuple[np.ndarray, np.ndarray] | None,
    folder: Path,
    ext: str,
    show_progress: bool,
) -> int:
    """items, shoppers.csv and the PNGs of the photos used; returns how many PNGs."""
    photo, used = None, np.zeros(0, dtype=np.int64)
    if photos is not None:
        images, labels = photos
        rng = np.random.default_rng((shop.config.seed, 3))
        photo = pick_photos(shop.catalog, labels, shop.config, rng)
        used = np.unique(photo)
        write_pngs(images, used, folder / "images", show_progress)
    write_table(items_table(shop.catalog, photo), folder / ("items" + ext))
    write_table(shoppers_table(shop.catalog, shop.shoppers), folder / "shoppers.csv")
    return len(used)


def _summary(shop: Shop, out_dir: Path, ext: str, photos: int) -> PrepareSummary:
    names = ["items" + ext, "interactions" + ext, "next_week" + ext, "shoppers.csv"]
    paths = {name.split(".")[0]: out_dir / name for name in names}
    if photos:
        paths["images"] = out_dir / "images"
    shoppers, groups = shop.shoppers, shop.catalog.n_groups
    counts = {
        "items": shop.config.items,
        "new items": shop.config.new_items,
        "sellers": groups["seller"],
        "brands": groups["brand"],
        "users": int((shoppers.events > 0).sum()),
        "interactions": int(shoppers.events.sum()),
        "next-week interactions": int(shoppers.next_week.sum()),
        "photos": photos,
    }
    notes = []
    if counts["users"] < shop.config.users:
        notes.append(
            f"{shop.config.users - counts['users']:,} of the {shop.config.users:,} shoppers drew "
            "no event (activity is heavy-tailed) and are not in the log; more --events or "
            "fewer --users gives each shopper more"
        )
    return PrepareSummary(out_dir=out_dir, paths=paths, counts=counts, notes=notes)
