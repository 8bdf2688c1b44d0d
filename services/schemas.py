"""The HTTP contract, declared once: what each endpoint accepts and answers, as pydantic models.

``services.contract.endpoint`` validates requests through these models and serializes answers
through them; ``services.openapi`` builds ``/openapi.json`` from them. Server-side caps (``k``,
page sizes, list lengths) are the bounds declared here.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
)
from pydantic_core import PydanticCustomError
from werkzeug.routing import PathConverter

from recsys.catalog.reads import COUNT_LIMIT
from recsys.ingest.values import MAX_SEARCH, MIN_SEARCH, BadValue, parse_id, parse_search
from recsys.model.diversity import DEFAULT_DIVERSITY
from recsys.model.recommender import NEW_ITEMS_RULE
from services.errors import ApiError

MAX_K = 100
MAX_PAGE = 100
# Rows skipped one by one: a deeper page takes the key of the page before (``after``), whose
# cost does not grow with its depth.
MAX_OFFSET = 10_000
MAX_KEY = 10**18 - 1  # the most a query's whole number may have: 18 digits
MAX_CANDIDATES = 1000
MAX_EVENTS = 1000
MAX_ATTRIBUTES = 200
MAX_VALUES = 100


def _explained(message: str) -> WrapValidator:
    """Replace the errors of a union (one per member) with one message saying what is wanted."""

    def validate(value, handler):
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("invalid_value", message) from None

    return WrapValidator(validate)


def _query_bool(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value.lower() in {"true", "1", "yes"}:
        return True
    if value.lower() in {"false", "0", "no"}:
        return False
    raise PydanticCustomError("bool_parsing", "must be true or false (or 1/0, yes/no)")


_QUERY_INT = re.compile(r"[+-]?[0-9]{1,18}")


def _query_int(value: Any) -> Any:
    """Plain ASCII digits only: pydantic's lax parsing would read "5_0" as 50 and the
    full-width "５" as 5."""
    if isinstance(value, str) and not _QUERY_INT.fullmatch(value):
        raise PydanticCustomError(
            "int_parsing", "must be a whole number written with the digits 0-9 (at most 18)"
        )
    return value


# A decimal number, with an exponent or not (0.3, .5, 1e-05, 2.5E-3: as generated clients
# write small floats); the exponent's 3 digits keep "1e999999" from being parsed at all.
_QUERY_FLOAT = re.compile(r"[+-]?([0-9]{1,18}(\.[0-9]{0,18})?|\.[0-9]{1,18})([eE][+-]?[0-9]{1,3})?")


def _query_float(value: Any) -> Any:
    """A decimal number (0, 0.3, .5, 1e-05): no underscores, words, nan or inf (nor an
    exponent past a float's range, which reads as inf)."""
    if isinstance(value, str) and not (
        _QUERY_FLOAT.fullmatch(value) and math.isfinite(float(value))
    ):
        raise PydanticCustomError("float_parsing", "must be a decimal number such as 0.3 or 1e-05")
    return value


QueryBool = Annotated[bool, BeforeValidator(_query_bool)]
QueryInt = Annotated[int, BeforeValidator(_query_int)]
QueryFloat = Annotated[float, BeforeValidator(_query_float)]
# The bounds before the parsing: after it (or on the optional), pydantic writes them into the
# document as ge / le, which are no JSON Schema keywords.
QueryKey = Annotated[int, Field(ge=0, le=MAX_KEY), BeforeValidator(_query_int)]
_DIVERSITY = (
    "MMR re-ranking, 0 to 1: 0 is the plain ranking, higher trades relevance for variety "
    "(content vectors: attributes and images)"
)
_IN_STOCK = (
    "true (the default, also when absent): items in stock only; false: items out of stock "
    "only. An out-of-stock candidate of a POST feed is left out unless this is false"
)
_GROUP_BY = (
    "An attribute naming the product each item is a variant of (e.g. style, for a product "
    "listed once per size and colour): one item per value, the best, and none of the "
    "query item's own or, for a feed leaving out seen items, of the user's seen items. "
    "Absent: the server's RECSYS_GROUP_BY; empty: no grouping"
)
_NEW_ITEMS = (
    f"Places kept for new items, 0 to k: {NEW_ITEMS_RULE}. New items otherwise rarely reach "
    "a feed before the next training"
)
# What an attribute filter takes (recsys.model.recommender's check): strings or finite
# numbers, never booleans (only in_stock is one) nor null. The document says so too: a
# boolean it allowed was a 400.
Scalar = StrictStr | StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)]


class RangeFilter(BaseModel):
    """A range of a numeric or date attribute, bounds inclusive, either one optional:
    {"min": 100, "max": 500}, {"min": "2025-01-01"} (a date alone is its whole day)."""

    model_config = ConfigDict(extra="forbid")
    min: Scalar | None = Field(None, description="Lowest value passing (a number or a date)")
    max: Scalar | None = Field(None, description="Highest value passing (a number or a date)")


FilterOne = Scalar | RangeFilter
FilterValue = Annotated[
    FilterOne | Annotated[list[FilterOne], Field(min_length=1, max_length=MAX_VALUES)],
    _explained(
        "must be a string or finite number, a range of a numeric or date attribute "
        '({"min": 100, "max": 500}, either key optional, or "100..500"), or a list of 1 to '
        f"{MAX_VALUES} of them (only in_stock takes true or false)"
    ),
]


def _id(value: str | int | float) -> str:
    try:
        return parse_id(value, "id")
    except BadValue as exc:
        raise PydanticCustomError("invalid_id", str(exc)) from None


# A number as the id rule reads it at every door (31.0 is "31"): candidates refused 31.0,
# which an event's item_id takes
Id = Annotated[
    StrictStr | StrictInt | StrictFloat,
    _explained("must be an id (a string or a number)"),
    AfterValidator(_id),
]
EventValue = Annotated[
    StrictStr | StrictInt | StrictFloat, _explained("must be a string or a number")
]


# Query parameters (strings, parsed: "10" is 10).


class Page(BaseModel):
    # a misspelt ?limti=5 was ignored: the default page came back as if asked for
    model_config = ConfigDict(extra="forbid")

    offset: QueryInt = Field(
        0,
        ge=0,
        le=MAX_OFFSET,
        description=f"Entries to skip, at most {MAX_OFFSET:,}; deeper pages use after",
    )
    limit: QueryInt = Field(24, ge=1, le=MAX_PAGE, description="Page size")
    after: QueryKey | None = Field(
        None, description="Start after this key: the next of the page before (not with offset)"
    )

    @field_validator("after")
    @classmethod
    def _one_way(cls, after, info: ValidationInfo):
        # both were taken together: the page started after the key, then skipped offset more
        if after is not None and info.data.get("offset"):
            raise PydanticCustomError("paging", "give offset or after, not both")
        return after


def _search(value: str) -> str:
    try:
        return parse_search(value, "q")
    except BadValue as exc:
        raise PydanticCustomError("invalid_search", str(exc)) from None


class ItemSearch(Page):
    q: Annotated[str, AfterValidator(_search)] = Field(
        "",
        description="Only items whose title contains this text (any case; "
        f"{MIN_SEARCH} to {MAX_SEARCH} characters, 2 with a Chinese, Japanese or Korean one, "
        "or none)",
    )


QueryFilter = Annotated[
    str | Annotated[list[str], Field(max_length=MAX_VALUES)],
    _explained(f"a filter takes at most {MAX_VALUES} values (the name repeated)"),
]


class Filtered(BaseModel):
    """Attribute filters: every query parameter not declared here is one, e.g.
    ?department=tops&brand=A&brand=B (categorical and multi-valued attributes; repeat a name
    for any of several values; ?filters[brand]=A is the same). Numeric and date attributes
    take inclusive ranges: ?price=100..500, ?price=..500, ?price=100.., ?price=16 (exactly
    16), ?release_date=2025-01-01.. (ISO 8601; a date alone is its whole day); repeated, any
    of them; an item without a value passes no range. An attribute the model cannot filter
    on, an empty value or a value its kind does not take is a 400."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, QueryFilter]
    # None (absent): no stock filter.
    in_stock: QueryBool = Field(None, description=_IN_STOCK)

    @property
    def filters(self) -> dict[str, Any]:
        stock = {} if self.in_stock is None else {"in_stock": self.in_stock}
        return {**(self.model_extra or {}), **stock}


class SimilarQuery(Filtered):
    k: QueryInt = Field(10, ge=1, le=MAX_K, description="Number of results")
    mode: Literal["similar", "also"] = Field(
        "similar",
        description='"similar": more like this (content-led, the product page default); '
        '"also": shoppers who viewed this also viewed. Each has its own trained weights.',
    )
    diversity: QueryFloat = Field(DEFAULT_DIVERSITY, ge=0, le=1, description=_DIVERSITY)
    group_by: str | None = Field(None, max_length=255, description=_GROUP_BY)


class FeedQuery(Filtered):
    k: QueryInt = Field(20, ge=1, le=MAX_K, description="Number of results")
    exclude_seen: QueryBool = Field(True, description="Leave out items the user has events for")
    diversity: QueryFloat = Field(DEFAULT_DIVERSITY, ge=0, le=1, description=_DIVERSITY)
    new_items: QueryInt = Field(0, ge=0, le=MAX_K, description=_NEW_ITEMS)
    group_by: str | None = Field(None, max_length=255, description=_GROUP_BY)


class ImageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # a page's cache-buster (<img src=".../images/ID?v=3">, after it replaced a photo): the
    # URL was a 400 "unknown parameter", so the image broke
    v: str | None = Field(
        None, max_length=100, description="Ignored: a version a page may add to bust caches"
    )


class SearchQuery(Filtered):
    k: QueryInt = Field(10, ge=1, le=MAX_K, description="Number of results")
    group_by: str | None = Field(None, max_length=255, description=_GROUP_BY)


# Path parameters.


class IdConverter(PathConverter):
    """An item or user id in a route (``<id:item_id>``): any text the id rule allows, "/"
    included (a SKU such as AB/123, sent as %2F or as it is), a leading one too (werkzeug's
    ``path`` refuses that). A route's fixed tail (``/similar``) still matches after it."""

    regex = r"[\s\S]+?"  # any character: a line break reaches path_id's 400, not a 404
    part_isolating = False  # it spans path segments

    def __init__(self, map, *args, tail: str | None = None, **kwargs) -> None:
        """``tail``: an id never ends in it (``<id(tail="/similar"):item_id>``), so a route
        beside one with that fixed tail (``/items/<id>`` beside ``/items/<id>/similar``) does
        not take the other's URL when its method is not the other's: the URL answers 405
        with the other route's methods (a DELETE of a feed's URL erases no user
        "<id>/recommendations")."""
        super().__init__(map, *args, **kwargs)
        if tail:
            self.regex = rf"{self.regex}(?<!{re.escape(tail)})"


def id_routes(blueprint) -> None:
    """Let ``blueprint``'s routes name ids as ``<id:...>``: the app gets the converter, and
    keeps a path's slashes as sent (a merged "//" would lose an id's leading slash)."""

    def install(state) -> None:
        state.app.url_map.converters["id"] = IdConverter
        state.app.url_map.merge_slashes = False

    blueprint.record_once(install)


def path_id(name: str, value: str) -> str:
    """A user or item id from the URL, checked by the one id rule (``parse_id``, as ingest
    checks ids): a 400 naming the parameter for an id no catalog row can have (a NUL or
    other control character, more than 255 characters), never a lookup of a look-alike."""
    try:
        return parse_id(value, name)
    except BadValue as exc:
        raise ApiError(400, "invalid_parameter", str(exc)) from None


# Request bodies (JSON, strict: "10" is not 10, true is not 1).


class Filters(BaseModel):
    """Attribute -> value or [values] (any of them); a numeric or date attribute takes
    ranges too, {"min": 100, "max": 500} or "100..500" (bounds inclusive), and a number
    alone is exactly it."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FilterValue]
    # None (absent): no stock filter; null is refused like any non-boolean.
    in_stock: StrictBool = Field(None, description=_IN_STOCK)


class RankRequest(BaseModel):
    """Rank a candidate list (or the whole catalog) for one user."""

    model_config = ConfigDict(extra="forbid")
    k: StrictInt = Field(20, ge=1, le=MAX_K, description="Number of results")
    exclude_seen: StrictBool = True
    candidates: list[Id] | None = Field(
        None, min_length=1, max_length=MAX_CANDIDATES, description="Rank only these item ids"
    )
    filters: Filters | None = None
    # StrictFloat takes whole numbers too (never strings or booleans), and its bounds are in
    # the document as minimum / maximum
    diversity: StrictFloat = Field(DEFAULT_DIVERSITY, ge=0, le=1, description=_DIVERSITY)
    new_items: StrictInt = Field(0, ge=0, le=MAX_K, description=_NEW_ITEMS)
    group_by: StrictStr | None = Field(None, max_length=255, description=_GROUP_BY)


_ID_RULE = (
    "1 to 255 characters; no control characters (NUL included), line separators, "
    "bidirectional controls or invisible look-alikes (format characters, variation "
    "selectors), and no '.' or '..' path segment"
)


class Event(BaseModel):
    """One event; ``recsys.ingest.values`` checks the values (the rules of ingest files), and
    ``recsys.ingest.interactions`` that the item is known. The same user, item, event and
    timestamp twice in one request is stored once; with two different weights, it is a 400."""

    model_config = ConfigDict(extra="forbid")
    user_id: EventValue = Field(description=_ID_RULE)
    item_id: EventValue = Field(description=_ID_RULE)
    event: EventValue | None = Field(None, description="view, click, cart, purchase, ...")
    weight: EventValue | None = Field(
        None, description="A finite number from 0 to 1,000,000; default 1"
    )
    rating: EventValue | None = Field(
        None, description="A finite number from 0 to 1,000,000 (instead of weight)"
    )
    timestamp: EventValue | None = Field(
        None,
        description="ISO 8601 (no zone: UTC) or epoch seconds, from 1970-01-01 up to "
        '2100-01-01; absent, null or "": the time the request is stored',
    )


class Events(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    skip_rejected: QueryBool = Field(
        False,
        description="Store the valid events and list the others under rejected (default: "
        "a 400 for the batch, nothing stored): for a forwarder, where one event of an item "
        "removed or a shopper erased since would hold up the batch",
    )


class ImageUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: bytes = Field(description="The photo (PNG, JPEG, WebP or GIF), a multipart file")


AttributeValue = Annotated[
    StrictStr
    | StrictInt
    | StrictFloat
    | StrictBool
    | Annotated[list[StrictStr | StrictInt | StrictFloat], Field(max_length=MAX_VALUES)]
    | None,
    _explained("must be a string, a number, a boolean, a list of strings or numbers, or null"),
]


class ItemFields(BaseModel):
    """An item's fields, as a row of an items file (README, "Data formats"): each value is
    checked by the rules of ``recsys ingest items``. PUT: absent fields are empty (in stock
    by default); PATCH: only the fields sent change."""

    model_config = ConfigDict(extra="forbid")
    title: StrictStr | None = Field(None, description="Display title")
    in_stock: StrictBool = Field(None, description="In stock (PUT: true when absent)")
    image: StrictStr | None = Field(
        None,
        max_length=4096,
        description="The photo's path relative to the service's images root "
        "(RECSYS_IMAGES_ROOT); or send the photo itself as the multipart part image",
    )
    attributes: dict[str, AttributeValue] = Field(
        None,
        max_length=MAX_ATTRIBUTES,
        description="Tabular attributes by name (kinds inferred as at ingest; a|b or a list "
        "is multi-valued); PATCH: only the names sent change, null removes one",
    )


class ItemUpload(BaseModel):
    """An item write with its photo: multipart/form-data."""

    model_config = ConfigDict(extra="forbid")

    item: bytes = Field(b"{}", description="The item's fields (ItemFields) as a JSON document")
    image: bytes = Field(description="The photo (PNG, JPEG, WebP or GIF), a multipart file")


# Responses.


class Item(BaseModel):
    """A catalog item as the API shows it (nulls: the model knows it, the catalog does not)."""

    item_id: str
    title: str | None
    image_url: str | None = Field(description="/images/<item_id>; null without an image")
    in_stock: bool | None
    attributes: dict[str, Any]


class ItemDetail(Item):
    """The item"""

    in_model: bool = Field(description="The served model can rank it")


class Reason(BaseModel):
    """One part of a result's score; the parts of a result sum to its score."""

    label: str = Field(
        description='In words: "looks alike", "same brand", "viewed together", "you viewed", '
        '"other items you viewed", "popular", ...'
    )
    share: float = Field(description="Its part of the score")
    item_id: str | None = Field(None, description="The history item it comes from (feeds)")
    title: str | None = Field(None, description="That item's title")


class RankedItem(Item):
    score: float
    because: list[Reason] = Field(
        description="Why it is here: the score split exactly into parts, largest first for "
        "similar items; for feeds the user's history items adding most (at most 3), then the "
        "rest of the history, popularity and the rest of the user's taste"
    )


class Similar(BaseModel):
    """Ranked similar items"""

    item_id: str
    model_version: str
    items: list[RankedItem]


class Feed(BaseModel):
    """Ranked items"""

    user_id: str
    model_version: str
    fallback: bool = Field(
        description="true: the user is unknown to the model (no events), so these are the most "
        "popular items passing the filters"
    )
    items: list[RankedItem]


class VisualSearch(BaseModel):
    """Ranked items"""

    model_version: str
    items: list[RankedItem]


_NEXT = "The after of the page that follows (null: this page is the last)"


class ItemPage(BaseModel):
    """A page of items"""

    items: list[Item]
    total: int = Field(
        description="Items matching the search, all pages together, counted up to "
        f"{COUNT_LIMIT:,} (total_exact false: more match)"
    )
    total_exact: bool = Field(description="Whether total counts every match")
    offset: int
    limit: int
    next: int | None = Field(description=_NEXT)


class UserSummary(BaseModel):
    user_id: str
    interactions: int = Field(description="Number of events stored")


class UserPage(BaseModel):
    """A page of users"""

    users: list[UserSummary]
    offset: int
    limit: int
    next: int | None = Field(description=_NEXT)


class RejectedEvent(BaseModel):
    index: int = Field(description="Its place in events")
    reason: str = Field(description="As a rejects file names it: unknown_item, erased_user, ...")
    message: str


class Recorded(BaseModel):
    """Stored (all or nothing, unless skip_rejected)"""

    inserted: int
    updated: int
    unchanged: int
    users: list[str] = Field(description="The users of the events stored")
    rejected: list[RejectedEvent] = Field(description="With skip_rejected: the events not stored")


_GENERATION_OF_WRITE = (
    "The catalog's items generation after this write: a worker whose live catalog is at it "
    "or later (/readyz live.generation) serves the change"
)


class ItemWritten(BaseModel):
    """Stored in one transaction; every worker serves it within seconds"""

    item: Item
    created: bool = Field(description="A new item (false: an item replaced or changed)")
    changed: bool = Field(description="false: the catalog already held exactly this")
    generation: int = Field(description=_GENERATION_OF_WRITE)


class ItemRemoved(BaseModel):
    """Removed; every worker leaves it out within seconds"""

    item_id: str
    generation: int = Field(description=_GENERATION_OF_WRITE)


class UserErased(BaseModel):
    """Erased: the user and their events are gone from the catalog, and the erasure is
    recorded (an id the catalog did not have too): events of theirs from before it are
    refused from now on, feeds no longer use what bundles trained before it hold of them,
    and the next training leaves them out. Bundles trained before still hold their data on
    disk: retrain, then remove the older bundles (`recsys bundles gc --keep 0`)"""

    user_id: str
    events: int = Field(description="Events of the user's that were deleted")
    found: bool = Field(description="Whether the catalog had the user (false: nothing to delete)")


class Reloaded(BaseModel):
    """Now serving the active bundle"""

    previous_version: str | None
    model_version: str


class Status(BaseModel):
    """The process answers"""

    status: str


class LiveCatalog(BaseModel):
    """What a worker serves beside its bundle: items new or changed since it was trained"""

    items: int = Field(description="Live items (new or changed) kept beside the bundle")
    max_items: int = Field(description="The most it keeps (RECSYS_LIVE_MAX_ITEMS)")
    waiting: int = Field(description="New or changed items left out because it is full")
    hidden: int = Field(description="Bundle items left out: removed, out of stock, changed")
    generation: int = Field(description="The catalog's items generation it is current to")
    retrain_due: bool = Field(
        description="It is full: run `recsys train` (the service answers meanwhile)"
    )


class Readiness(Status):
    """Ready"""

    model_version: str
    live: LiveCatalog | None = Field(
        None, description="The live catalog of the worker that answered (null: none)"
    )
    refused_version: str | None = Field(
        None,
        description="The registry's active bundle when the worker that answered cannot load "
        "it and serves model_version instead (null: it serves the active bundle); the server "
        "log says why",
    )
    group_by: str | None = Field(
        None,
        description="The attribute lists are grouped by when a request names none "
        "(RECSYS_GROUP_BY; null: none, or one the served bundle cannot group by). Hosts "
        "behind one balancer must agree on it, or one request gets two answers",
    )
    image_search: bool = Field(
        False,
        description="Whether the served bundle answers POST /v1/search/image: it was trained "
        "with the items' photos (false: its catalog had none). The shop page offers search by "
        "photo only then",
    )


class ErrorDetail(BaseModel):
    status: int
    code: str
    message: str


class Error(BaseModel):
    """Every error, whatever its status"""

    error: ErrorDetail
