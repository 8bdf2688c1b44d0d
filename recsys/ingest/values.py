"""The one validation of ids and values, for every door (files, the HTTP API, the library).

The rules, as the README states them: an id is 1 to ``MAX_ID_LENGTH`` characters of text
(surrounding whitespace removed) without control characters (NUL included), line or paragraph
separators, bidirectional controls, invisible look-alikes, U+FFFD or unpaired surrogates, and
no "." or ".." path segment; a number is finite (NaN
and infinities are refused, never read as "missing"), a weight or rating from 0 to
``MAX_WEIGHT``; a timestamp lies in ``[EARLIEST, LATEST)``, UTC, and at most ``FUTURE_SLACK``
past the clock. A missing value is None or
empty/blank text; a title or an attribute's text is at most ``MAX_TEXT_LENGTH`` characters.

Every scalar parser takes the raw value (str from CSV, typed from Parquet/JSON) and either
returns the normalised value or raises ``BadValue`` with a message that names the problem.
Those scalar parsers are the rules. The column parsers at the end apply them to a whole batch:
vectorised kernels accept the plain values (``"u123"``, ``"2024-02-01T10:00:00Z"``, ``"1.5"``)
at once, and every other value goes through the scalar rule, so a column gives exactly what the
scalar parser gives value by value, rejects and their messages included.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.catalog.models import AttributeKind
from recsys.ingest.report import Reason
from recsys.text import CJK_CHARACTER
from recsys.vision.photo import photo_format

MAX_ID_LENGTH = 255
# The shortest title search: a trigram (three characters) is what the catalog's title index
# looks up. The longest: a search costs the index its length in every title that holds its
# trigrams, and no product title is longer.
MIN_SEARCH = 3
MAX_SEARCH = 200
# Characters of a title or of an attribute's text value (a product description fits): a
# megabyte "title" would be stored, sent in every card and tokenised at every training.
MAX_TEXT_LENGTH = 10_000
# Weights and ratings above this are a unit mistake, and training's float32 confidences
# (weight x event multiplier x alpha, summed) must stay finite.
MAX_WEIGHT = 1_000_000
# Timestamps from the start of 1970 up to, not including, 2100 (naive UTC): anything outside
# is a typo or a unit mistake, and time decay and splits compute in datetime64[ns].
EARLIEST = datetime(1970, 1, 1)
LATEST = datetime(2100, 1, 1)
# How far past the clock of the machine that stores it an event may be dated: a clock a little
# fast, or a local time read as UTC, passes; a year typed wrong or a clock years ahead does
# not. Training's time decay counts each event's age from its user's latest: one event dated
# 2099 made the user's 36 others 76 years old, and dropped them from the fit.
FUTURE_SLACK = timedelta(days=1)


def now() -> datetime:
    """This machine's clock, naive UTC (what stored timestamps are)."""
    return datetime.now(UTC).replace(tzinfo=None)


def latest_event_time() -> datetime:
    """The first moment an event may not be dated at, now (``LATEST`` at the most)."""
    return min(LATEST, now() + FUTURE_SLACK)


# Code points no id may hold (inclusive ranges): C0 and C1 controls (NUL included), line and
# paragraph separators, U+FFFD (what undecodable bytes become), and the invisible ones that
# made a second id look the same as the first ("sku-1" and "sku-1" with a zero-width space,
# a right-to-left mark or a variation selector): every format character (Unicode's category
# Cf: bidirectional marks and controls, the soft hyphen, zero-width space, word joiner,
# invisible operators, the byte-order mark, tags), the variation selectors, the combining
# grapheme joiner, the Hangul fillers and the braille blank. The zero-width (non-)joiners
# U+200C and U+200D stay: emoji sequences (👩‍💻) and Persian or Indic words hold them.
_ID_FORBIDDEN = (
    (0x00, 0x1F),
    (0x7F, 0x9F),
    (0xAD, 0xAD),
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x0600, 0x0605),  # Arabic and Syriac format characters, the Arabic letter mark
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x115F, 0x1160),  # Hangul fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels, invisible
    (0x180B, 0x180F),  # Mongolian variation selectors and vowel separator
    (0x200B, 0x200B),
    (0x200E, 0x200F),  # left-to-right and right-to-left marks
    (0x2028, 0x202E),
    (0x2060, 0x206F),
    (0x2800, 0x2800),  # braille blank
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),  # half-width Hangul filler
    (0xFFF9, 0xFFFB),
    (0xFFFD, 0xFFFD),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),  # tags, variation selectors supplement
)
# The zero-width non-joiner and joiner, which ids may hold but not alone.
_JOINERS = "\u200c\u200d"
_JOINERS_RE2 = "^[\\x{200c}\\x{200d}]+$"
# Free text (titles, attribute values) may hold tabs and line breaks, no other C0 control.
_TEXT_FORBIDDEN = ((0x00, 0x08), (0x0B, 0x0C), (0x0E, 0x1F), (0x7F, 0x7F), (0xFFFD, 0xFFFD))
_EVENT = re.compile(r"^[a-z][a-z0-9_\-]{0,31}$")
_ISO_DATE = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$"
)
_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n"}
# Epoch seconds later than this (year 2286) are almost surely milliseconds.
MAX_EPOCH_SECONDS = 10_000_000_000
# Each factor of 1000 past epoch seconds, the unit a timestamp that far out is likely in.
_FINER_UNITS = (("milliseconds", 10**3), ("microseconds", 10**6), ("nanoseconds", 10**9))
# Eight digits that make a date of 1900 to 2099 are one (ISO 8601's basic form, a data
# warehouse's date key), not epoch seconds of 1970-1973.
_BASIC_DATE = re.compile(r"(19\d\d|20\d\d)(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])")
_DATE_KEY = re.compile(r"(\d{8})(?:\.0*)?", re.ASCII)


class BadValue(ValueError):
    """A value that cannot be parsed; the message is shown to the user."""

    reason = Reason.INVALID_VALUE


class MissingFile(BadValue):
    """A path that names no file (the row is rejected as ``missing_image``)."""

    reason = Reason.MISSING_IMAGE


def is_missing(value: Any) -> bool:
    """None or blank text. NaN is not missing: it is a number that is not finite."""
    return value is None or (isinstance(value, str) and not value.strip())


def _class(ranges: tuple[tuple[int, int], ...], re2: bool = False) -> str:
    """A character class of these ranges, for Python's ``re`` or (``re2``) Arrow's RE2."""
    code = (lambda c: f"\\x{{{c:x}}}") if re2 else (lambda c: f"\\U{c:08x}")
    return "[" + "".join(f"{code(low)}-{code(high)}" for low, high in ranges) + "]"


_ID_BAD = re.compile(_class(_ID_FORBIDDEN))
_TEXT_BAD = re.compile(_class(_TEXT_FORBIDDEN))


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to about ``limit`` characters for messages, with the characters
    no id may hold written as escapes: repr leaves a variation selector or a Hangul filler
    as it is, and a message showed ``'ㅤ'``."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for str()
        return "a number too long to show"
    text = _ID_BAD.sub(lambda found: ascii(found[0])[1:-1], text)
    return text if len(text) <= limit else text[:limit] + "…"


# The first integer a float64 may not hold: 2**53 + 1 is read as 2**53, and
# 12345678901234567890.0 is stored as 12345678901234567168.
FLOAT_EXACT = 2**53


def parse_id(value: Any, column: str) -> str:
    """External ids are strings: ``12``, ``12.0`` and ``"12"`` are all ``"12"``. Anything
    but a string or a number is refused, as the HTTP API refuses it (a JSON object in an
    ingest file became the id "{'id': 7}")."""
    if isinstance(value, bool | np.bool_):
        raise BadValue(f"{column} {value!r} is a boolean, expected an id")
    if not isinstance(value, str | numbers.Number):
        raise BadValue(
            f"{column} {shown(value)} is a {type(value).__name__}: must be a string or a number"
        )
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadValue(f"{column} {value!r} is not a finite number, expected an id")
        if abs(value) >= FLOAT_EXACT:
            raise BadValue(
                f"{column} {value!r} is a float of 2**53 or more, which may not be the number "
                "written; write ids as text: a float cannot hold this id exactly"
            )
        value = int(value) if value.is_integer() else value
    if isinstance(value, Decimal):
        value = _decimal_id(value, column)
    if isinstance(value, int) and abs(value) >= 10**MAX_ID_LENGTH:
        raise BadValue(f"{column} is longer than {MAX_ID_LENGTH} characters, the limit")
    text = composed(str(value).strip())
    if not text:
        raise BadValue(f"{column} is empty; ids are 1 to {MAX_ID_LENGTH} characters")
    if not text.strip(_JOINERS):  # they stay for emoji and Persian words, not alone
        raise BadValue(f"{column} holds only zero-width joiners, which show as nothing")
    _check_characters(text, column, _ID_BAD)
    if len(text) > MAX_ID_LENGTH:
        raise BadValue(f"{column} is {len(text)} characters long, the limit is {MAX_ID_LENGTH}")
    if _DOT_SEGMENT.search(text):
        raise BadValue(
            f"{column} {shown(text)} is or holds the path segment '.' or '..', which browsers "
            "and HTTP clients resolve away, so it could not be read at its URL: give it "
            "another id"
        )
    return text


# "." or ".." between slashes or the id's ends: /v1/items/.. was sent as /v1/ and
# /v1/items/./similar as /v1/items/similar, by every browser, requests and Node.
_DOT_SEGMENT_RE2 = r"(^|/)\.\.?(/|$)"
_DOT_SEGMENT = re.compile(_DOT_SEGMENT_RE2)


def _decimal_id(value: Decimal, column: str) -> int | str:
    """A decimal (Parquet's decimal128) as the rule reads a float: 123.00 is the id 123, not
    "123.00"; 12.50 is "12.5"."""
    if not value.is_finite():
        raise BadValue(f"{column} {value!r} is not a finite number, expected an id")
    if value.adjusted() >= MAX_ID_LENGTH:  # before int(): 1E+999999999 is a billion digits
        raise BadValue(f"{column} is longer than {MAX_ID_LENGTH} characters, the limit")
    return int(value) if value == value.to_integral_value() else f"{value.normalize():f}"


# The item route's tail (``/v1/items/<id>/similar``): an item id ending in it would be
# unreachable at ``/v1/items/<id>``, which names the similar items of the id before it.
ITEM_ROUTE_TAIL = "/similar"


def parse_item_id(value: Any, column: str) -> str:
    """``parse_id``, and not ending in the item route's tail (ids with "/" are allowed)."""
    text = parse_id(value, column)
    if text.endswith(ITEM_ROUTE_TAIL):
        raise BadValue(
            f"{column} {shown(text)} ends in {ITEM_ROUTE_TAIL!r}, the path of an item's "
            f"similar items, so the item could not be read at its own URL (it would name the "
            f"similar items of {shown(text[: -len(ITEM_ROUTE_TAIL)])}): give it another id"
        )
    return text


def parse_text(value: Any, column: str) -> str:
    text = composed(str(value).strip())
    if len(text) > MAX_TEXT_LENGTH:
        raise BadValue(
            f"{column} is {len(text):,} characters long, the limit is {MAX_TEXT_LENGTH:,}"
        )
    _check_characters(text, column, _TEXT_BAD)
    return text


def parse_search(value: Any, column: str) -> str:
    """A title search: the text stripped, "" (no search) or ``MIN_SEARCH`` to ``MAX_SEARCH``
    characters, which the catalog's trigram index can look up (shorter text would read every
    title: migration 0011). Two characters where one is CJK: most Chinese words (红色, 李宁)
    are two characters, so such a search reads every title, within the search's time bound
    (``reads.SEARCH_SECONDS``)."""
    text = parse_text(value, column)
    if 0 < len(text) < MIN_SEARCH and not (len(text) == 2 and CJK_CHARACTER.search(text)):
        raise BadValue(
            f"{column} {shown(text)} is too short to search: a title search needs at least "
            f"{MIN_SEARCH} characters, 2 in Chinese, Japanese or Korean (or none, to list "
            "every item)"
        )
    if len(text) > MAX_SEARCH:
        raise BadValue(
            f"{column} is {len(text)} characters long; a title search takes at most {MAX_SEARCH}"
        )
    return text


def composed(text: str) -> str:
    """``text`` in Unicode's composed form (NFC): "Jürgen" typed with a combining umlaut (as
    macOS writes file names and some exports) and with the letter ü are one id, one brand,
    one title to a search. Compatibility forms (full-width letters) stay as they are."""
    if text.isascii():
        return text
    try:
        return unicodedata.normalize("NFC", text)
    except UnicodeError:  # an unpaired surrogate: _check_characters names it
        return text


def _check_characters(text: str, column: str, forbidden: re.Pattern) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise BadValue(
            f"{column} {shown(text)} has an unpaired surrogate, not valid Unicode"
        ) from None
    if "\ufffd" in text:
        raise BadValue(
            f"{column} {shown(text)} is not valid UTF-8 (it holds U+FFFD); re-save the file "
            "(or send the text) as UTF-8"
        )
    if found := forbidden.search(text):
        kind = "control" if unicodedata.category(found[0]) == "Cc" else "invisible or control"
        raise BadValue(
            f"{column} {shown(text)} holds the {kind} character U+{ord(found[0]):04X} at "
            f"position {found.start()}; remove it"
        )


def parse_float(value: Any, column: str) -> float:
    if isinstance(value, bool):
        raise BadValue(f"{column} {value!r} is a boolean, expected a number")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise BadValue(f"{column} {shown(value)} is not a number") from None
    except OverflowError:  # an integer beyond the float range, e.g. 10**400
        raise BadValue(f"{column} {shown(value)} is too large, not a finite number") from None
    if not math.isfinite(number):
        raise BadValue(f"{column} {shown(value)} is not a finite number")
    return number


def parse_weight(value: Any, column: str) -> float:
    """An implicit-feedback weight or a rating: a finite number from 0 to ``MAX_WEIGHT``."""
    number = parse_float(value, column)
    if number < 0:
        raise BadValue(f"{column} {number:g} is negative; implicit feedback weights must be ≥ 0")
    if number > MAX_WEIGHT:
        # as written: 1000001 {:g} is "1e+06", which reads as the limit itself
        raise BadValue(f"{column} {shown(value)} is above the limit {MAX_WEIGHT:,}; scale it down")
    return number


def parse_bool(value: Any, column: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadValue(f"{column} {shown(value)} is not a boolean; use true/false, yes/no or 1/0")


def parse_timestamp(value: Any, column: str = "timestamp") -> datetime:
    """An event's time: ``parse_moment``, at most ``FUTURE_SLACK`` past the clock."""
    moment = parse_moment(value, column)
    if moment >= (limit := latest_event_time()):
        raise BadValue(
            f"{column} {shown(str(value).strip())} is in the future: after {limit:%Y-%m-%d %H:%M} "
            "UTC, a day past this machine's clock; check the clock and time zone it came from"
        )
    return moment


def parse_moment(value: Any, column: str = "timestamp") -> datetime:
    """ISO 8601 (naive means UTC) or epoch seconds -> naive UTC datetime in the range."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    else:
        moment = _parse_timestamp_text(value, column)
    try:
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-14:00 is past year 9999 in UTC
        moment = None
    if moment is None or not EARLIEST <= moment < LATEST:
        raise BadValue(
            f"{column} {shown(str(value).strip())} is outside the accepted range "
            f"{EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} (UTC)"
        )
    return moment


def _parse_timestamp_text(value: Any, column: str) -> datetime:
    text = str(value).strip()
    # 20240310: ISO 8601's basic date, not 1970-08-23 (also 20240310.0, as a float column
    # of date keys with gaps is written)
    if (key := _DATE_KEY.fullmatch(text)) and _BASIC_DATE.fullmatch(key[1]):
        try:
            return datetime.strptime(key[1], "%Y%m%d")
        except ValueError:
            pass  # 12345678: epoch seconds after all
    # ASCII digits only: float() also reads "1_710_072_000" and other scripts' digits
    number = _NUMBER.fullmatch(text) or text.lower().lstrip("+-") in ("nan", "inf", "infinity")
    seconds = float(text) if number else None
    if seconds is not None:
        if not math.isfinite(seconds):
            raise BadValue(f"{column} {shown(text)} is not a finite number of epoch seconds")
        if abs(seconds) >= MAX_EPOCH_SECONDS:
            unit, factor = next(
                ((u, f) for u, f in _FINER_UNITS if abs(seconds) < MAX_EPOCH_SECONDS * f),
                _FINER_UNITS[-1],
            )
            raise BadValue(
                f"{column} {shown(text)} is out of range for epoch seconds "
                f"({unit}? divide by {factor:,})"
            )
        return datetime.fromtimestamp(seconds, UTC)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise BadValue(f"{column} {shown(text)} is neither ISO 8601 nor epoch seconds") from None


def parse_event(value: Any, column: str = "event") -> str:
    text = str(value).strip().lower()
    if not _EVENT.match(text):
        raise BadValue(
            f"event {shown(value)} must be a short name: a letter, then up to 31 letters, "
            "digits, '_' or '-' (e.g. view, click, cart, purchase)"
        )
    return text


def attribute_value(value: Any, column: str = "attribute") -> Any:
    """Normalise a tabular attribute: numbers stay numbers, ``a|b|c`` becomes a list,
    dates become ISO strings, other text is stripped. Missing values (and NaN, which is how
    pandas writes an empty cell) return None; infinities and control characters are refused."""
    if is_missing(value) or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isinf(value):
            raise BadValue(f"{column} {value!r} is not a finite number")
        return _exact_int(value) if isinstance(value, float) else value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        raise BadValue(f"{column} is a nested object; flatten it into separate columns")
    if isinstance(value, list | tuple):
        if any(isinstance(v, list | tuple | dict) for v in value):
            raise BadValue(
                f"{column} holds a list or object inside its list; give a flat list of "
                "strings or numbers"
            )
        items = [parse_text(v, column) for v in value if not is_missing(v)]
        return [item for item in items if item] or None
    text = parse_text(value, column)
    if text.lower() in _NAN_TEXTS:  # a missing number as pandas and numpy write one
        return None
    number = _number_or_none(text)
    if number is not None and math.isinf(number):
        raise BadValue(f"{column} {shown(text)} is not a finite number")
    if number is not None:
        return number
    if "|" in text:
        return [part.strip() for part in text.split("|") if part.strip()] or None
    return text


_NAN_TEXTS = frozenset({"nan", "-nan", "+nan"})


def _number_or_none(text: str) -> int | float | None:
    """The number ``text`` writes, None for text that is no number. An overflow such as
    ``1e400`` is an infinity; the words "inf" and "infinity" stay words (a brand may be
    one), as does "nan" here (``attribute_value`` takes it for a missing value first)."""
    # Keep identifiers like "007" or "02134" as text: the leading zero is meaningful.
    if len(text) > 1 and text[0] == "0" and text[1].isdigit():
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    if math.isnan(number) or (math.isinf(number) and not any(c.isdigit() for c in text)):
        return None
    if "." in text or "e" in text.lower() or not number.is_integer():
        return number
    exact = int(text)
    return exact if abs(exact) <= EXACT_INT else None  # a 20-digit code is an identifier


# Past 2**53 a float no longer holds every integer: 1e300 stays a float (not a 301-digit
# int), and a longer run of digits is text.
EXACT_INT = 2**53


def _exact_int(value: float) -> int | float:
    """An integral float as an int (``3.0`` -> ``3``) where the int is exact."""
    return int(value) if value.is_integer() and abs(value) <= EXACT_INT else value


def value_kind(value: Any) -> AttributeKind:
    """The kind a single normalised attribute value suggests."""
    if isinstance(value, list):
        return AttributeKind.MULTI
    if isinstance(value, int | float) and not isinstance(value, bool):
        return AttributeKind.NUMERIC
    if isinstance(value, str):
        if _ISO_DATE.match(value) and _real_date(value):
            return AttributeKind.DATE
        if len(value) >= 40 or value.count(" ") >= 3 or _long_cjk(value):
            return AttributeKind.TEXT
    return AttributeKind.CATEGORICAL


def _real_date(value: str) -> bool:
    """Whether a value of a date's shape is a day and time that exist: "2026-02-30",
    "9999-99-99" and "2026-01-01T25:99" were stored in a date attribute as given."""
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _long_cjk(value: str) -> bool:
    """Whether ``value`` is a sentence in a script written without spaces: 12 CJK characters
    or more (a Chinese description of 26 characters was a category value, its English
    translation text)."""
    return not value.isascii() and len(CJK_CHARACTER.findall(value)) >= 12


# Query parameters of the service's similar-items and feed endpoints: an attribute of one of
# these names could not be filtered on by name (``?k=...`` is the number of results).
RESERVED_ATTRIBUTES = frozenset({"k", "mode", "diversity", "exclude_seen", "new_items"})


def check_attribute_name(name: str) -> None:
    """``BadValue`` for an attribute name the service's query parameters take."""
    if name in RESERVED_ATTRIBUTES:
        taken = ", ".join(sorted(RESERVED_ATTRIBUTES))
        raise BadValue(
            f"{name!r} is a query parameter of the service ({taken}), so it could not be "
            "filtered on; rename the attribute"
        )


def misfit(recorded: AttributeKind, value: Any) -> str | None:
    """What a single value must be to fit an attribute of the ``recorded`` kind without
    changing it (None: it fits). An item written alone (the HTTP API) never re-types an
    attribute the catalog holds: a numeric or date attribute takes numbers or dates, a
    categorical one a single value; text and multi-valued ones take any value."""
    kind = value_kind(value)
    if recorded == AttributeKind.NUMERIC and kind != AttributeKind.NUMERIC:
        return "must be a number"
    if recorded == AttributeKind.DATE and kind != AttributeKind.DATE:
        return "must be a date (ISO 8601, such as 2025-11-01)"
    if recorded == AttributeKind.CATEGORICAL and kind == AttributeKind.MULTI:
        return "takes one value, not a list"
    return None


def column_kind(values: list[Any]) -> AttributeKind | None:
    """The kind of a column from its non-missing normalised values (None if all missing)."""
    return kind_of_counts(Counter(value_kind(v) for v in values if v is not None))


def kind_of_counts(kinds: Counter) -> AttributeKind | None:
    """The kind of a column from how many of its values suggest each kind.

    All numbers -> numeric; all dates -> date; mostly long/multi-word strings -> text;
    any multi-valued -> multi; anything else -> categorical.
    """
    kinds = +kinds
    if not kinds:
        return None
    if len(kinds) == 1:
        return next(iter(kinds))
    if kinds[AttributeKind.TEXT] * 2 >= kinds.total():
        return AttributeKind.TEXT
    if AttributeKind.MULTI in kinds:
        return AttributeKind.MULTI
    return AttributeKind.CATEGORICAL


def merge_kinds(old: AttributeKind | None, new: AttributeKind | None) -> AttributeKind | None:
    """Widen a recorded kind with a new batch's kind, so later batches never narrow it."""
    if old is None or old == new:
        return new if old is None else old
    if new is None:
        return old
    pair = {old, new}
    for wider in (AttributeKind.TEXT, AttributeKind.MULTI):
        if wider in pair:
            return wider
    return AttributeKind.CATEGORICAL


# Columns: the rules above applied to a whole batch at once.

Column = pa.Array | list  # an Arrow array, or plain Python values (JSON Lines, the HTTP API)
Rule = Callable[[Any, str], Any]

# Printable ASCII at both ends: str.strip() leaves such a value as it is.
_PLAIN = r"(?s)^[!-~](.*[!-~])?$"
_DECIMAL = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
# The same, for the scalar rules (ASCII digits, as RE2's \d in the column kernels).
_NUMBER = re.compile(_DECIMAL, re.ASCII)
_EPOCH = r"^(\d{1,7}|\d{9,10})$"  # eight digits may be a date: the scalar rule decides
_ISO = (
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?"
    r"(Z|[+-]([01]\d|2[0-3]):[0-5]\d)?)?$"
)
_ID_BAD_RE2 = _class(_ID_FORBIDDEN, re2=True)
_TEXT_BAD_RE2 = _class(_TEXT_FORBIDDEN, re2=True)
_EPOCH_START = datetime(1970, 1, 1)
_EARLIEST_US = (EARLIEST - _EPOCH_START) // timedelta(microseconds=1)
# Python's datetime range, less a day at each end for time zones.
_PYTHON_SECONDS = (
    (datetime(1, 1, 2) - _EPOCH_START) // timedelta(seconds=1),
    (datetime(9999, 12, 30) - _EPOCH_START) // timedelta(seconds=1),
)
_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


@dataclass
class Parsed:
    """A column after validation: ``values`` is null (None) where missing or bad."""

    values: pa.Array | np.ndarray  # (B,) Arrow for typed rules, object array otherwise
    missing: np.ndarray  # (B,) bool
    errors: dict[int, BadValue]  # row -> why its value was refused


def parse_column(
    column: Column | None, length: int, name: str, rule: Rule, type_: pa.DataType, fast=None
) -> Parsed:
    """``rule`` applied to each value; ``fast(column) -> (accepted, values)`` takes the plain
    values at once and must agree with ``rule`` on every value it accepts."""
    if column is None:
        return Parsed(pa.nulls(length, type_), np.ones(length, dtype=bool), {})
    if isinstance(column, list):
        return _each(column, name, rule, type_)
    missing = _null_or_empty(column)
    accepted = np.zeros(length, dtype=bool)
    values = pa.nulls(length, type_)
    if fast is not None:
        accepted, values = fast(column)
        accepted &= ~missing
    rest = ~accepted & ~missing
    slow = _each(column.filter(pa.array(rest)).to_pylist(), name, rule, type_)
    values = pc.if_else(pa.array(accepted), values, pa.nulls(length, type_))
    values = pc.replace_with_mask(values, pa.array(rest), slow.values)
    missing[rest] = slow.missing
    rows = np.flatnonzero(rest)
    return Parsed(values, missing, {int(rows[i]): exc for i, exc in slow.errors.items()})


def parse_unique(column: Column | None, length: int, name: str, rule: Rule, type_=None) -> Parsed:
    """``rule`` applied once per distinct value: for columns with few distinct values
    (events, flags) or rules that touch the disk (image paths). ``type_=None`` keeps the
    results as Python objects."""
    if column is None:
        empty = pa.nulls(length, type_) if type_ else np.full(length, None, dtype=object)
        return Parsed(empty, np.ones(length, dtype=bool), {})
    if isinstance(column, list):
        return _each(column, name, rule, type_)
    try:
        encoded = pc.dictionary_encode(column)
    except pa.ArrowNotImplementedError:  # nested values: no hashing kernel
        return _each(column.to_pylist(), name, rule, type_)
    distinct = _each(encoded.dictionary.to_pylist(), name, rule, type_)
    null = encoded.indices.is_null().to_numpy(zero_copy_only=False)
    index = encoded.indices.fill_null(0).to_numpy()  # (B,)
    values = distinct.values.take(encoded.indices) if type_ else distinct.values[index]
    if not type_:
        values[null] = None
    bad = np.flatnonzero(np.isin(index, list(distinct.errors)) & ~null)
    errors = {int(row): distinct.errors[int(index[row])] for row in bad}
    return Parsed(values, null | distinct.missing[index], errors)


def _each(values: list, name: str, rule: Rule, type_) -> Parsed:
    """The slow, general path: the scalar rule on each value."""
    out, missing, errors = [], np.zeros(len(values), dtype=bool), {}
    for row, value in enumerate(values):
        result = None
        if is_missing(value):
            missing[row] = True
        else:
            try:
                result = rule(_text_of_bytes(value, name), name)
            except BadValue as exc:
                errors[row] = exc
        out.append(result)
    if type_ is None:
        array = np.empty(len(out), dtype=object)
        array[:] = out
        return Parsed(array, missing, errors)
    return Parsed(pa.array(out, type_), missing, errors)


def _text_of_bytes(value: Any, name: str) -> Any:
    """A binary value (Parquet strings written without their UTF-8 annotation, as Spark and
    Hive may) as the text it holds; other values as they are. Its repr ("b'pu1'") was stored
    as a new id."""
    if not isinstance(value, bytes):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadValue(f"{name} holds bytes that are not UTF-8 text") from None


def _null_or_empty(column: pa.Array) -> np.ndarray:
    missing = column.is_null()
    if pa.types.is_string(column.type):
        missing = pc.or_(missing, pc.equal(column, "").fill_null(False))
    return missing.to_numpy(zero_copy_only=False).copy()


def _matches(column: pa.Array, pattern: str) -> np.ndarray:
    return pc.match_substring_regex(column, pattern).fill_null(False).to_numpy(zero_copy_only=False)


def _none(column: pa.Array, type_: pa.DataType):
    return np.zeros(len(column), dtype=bool), pa.nulls(len(column), type_)


def _fast_text(column: pa.Array, forbidden: str, limit: int | None = None):
    """Strings that strip() leaves alone, with none of the ``forbidden`` characters (an RE2
    class) and at most ``limit`` long."""
    if pa.types.is_integer(column.type):
        return column.is_valid().to_numpy(zero_copy_only=False), column.cast(pa.string())
    if not pa.types.is_string(column.type):
        return _none(column, pa.string())
    ok = _matches(column, _PLAIN) & ~_matches(column, forbidden)
    if not pc.all(pc.string_is_ascii(column)).as_py():  # as composed: 40 ms per 10^6 ids
        column = pc.utf8_normalize(column, form="NFC")
    if limit is not None:
        ok &= pc.utf8_length(column).fill_null(0).to_numpy() <= limit
    return ok, column


def _fast_float(column: pa.Array, minimum: float = -math.inf, maximum: float = math.inf):
    if pa.types.is_string(column.type):
        ok = _matches(column, _DECIMAL)
        numbers = pc.if_else(pa.array(ok), column, "0").cast(pa.float64())
    elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        ok, numbers = column.is_valid().to_numpy(zero_copy_only=False), column.cast(pa.float64())
    else:
        return _none(column, pa.float64())
    array = numbers.fill_null(0).to_numpy()
    return ok & np.isfinite(array) & (array >= minimum) & (array <= maximum), numbers


def _fast_timestamp(column: pa.Array):
    accepted, values = _fast_moments(column)
    micros = values.cast(pa.int64()).fill_null(0).to_numpy()  # (B,) since 1970, UTC
    latest = (latest_event_time() - _EPOCH_START) // timedelta(microseconds=1)
    return accepted & (micros >= _EARLIEST_US) & (micros < latest), values


def _fast_moments(column: pa.Array):
    moment = pa.timestamp("us")
    if pa.types.is_timestamp(column.type):
        return column.is_valid().to_numpy(zero_copy_only=False), column.cast(moment, safe=False)
    if pa.types.is_integer(column.type):
        seconds = column.cast(pa.int64()).fill_null(0).to_numpy()
        ok = column.is_valid().to_numpy(zero_copy_only=False) & (np.abs(seconds) < 10**10)
        ok &= (seconds < 10**7) | (seconds >= 10**8)  # eight digits: the scalar rule
        return ok, pa.array(np.where(ok, seconds, 0) * 1_000_000, moment)
    if not pa.types.is_string(column.type):
        return _none(column, moment)
    epoch, iso = _matches(column, _EPOCH), _matches(column, _ISO)
    micros = np.zeros(len(column), dtype=np.int64)
    micros[epoch] = column.filter(pa.array(epoch)).cast(pa.int64()).to_numpy() * 1_000_000
    parsed = pd.to_datetime(
        pd.Series(column.filter(pa.array(iso)).to_numpy(zero_copy_only=False)),
        format="ISO8601", utc=True, errors="coerce",
    )  # fmt: skip
    iso_rows = np.flatnonzero(iso)
    good = parsed.notna().to_numpy()
    micros[iso_rows[good]] = (
        parsed[good].dt.tz_convert(None).to_numpy().astype("M8[us]").view(np.int64)
    )
    iso[iso_rows[~good]] = False  # out of pandas' range or not a date: the scalar rule decides
    return epoch | iso, pa.array(micros, pa.int64()).cast(moment)


def _within_python_range(column: pa.Array) -> pa.Array:
    """A date or timestamp column with its values clamped to years 1-9999, the range of
    Python's datetime, so the scalar rule can be shown (and refuse) every value."""
    if pa.types.is_date(column.type):
        column = column.cast(pa.timestamp("s" if pa.types.is_date32(column.type) else "ms"))
    per_second = _PER_SECOND[column.type.unit]
    limits = np.iinfo(np.int64)
    low = max(_PYTHON_SECONDS[0] * per_second, int(limits.min))
    high = min(_PYTHON_SECONDS[1] * per_second, int(limits.max))
    raw = column.cast(pa.int64())
    at_least = pc.max_element_wise(raw, low, skip_nulls=False)  # a null stays null: no time
    return pc.min_element_wise(at_least, high, skip_nulls=False).cast(column.type)


def _fast_id(column: pa.Array):
    if pa.types.is_floating(column.type):  # as parse_id: 42.0 is "42" (pandas' int ids with gaps)
        return _integral_floats(column)
    ok, values = _fast_text(column, _ID_BAD_RE2, MAX_ID_LENGTH)
    return ok & ~_matches(values, _DOT_SEGMENT_RE2) & ~_matches(values, _JOINERS_RE2), values


def _integral_floats(column: pa.Array):
    """Floats that hold an integer below 2**53 (``FLOAT_EXACT``), as that integer's text;
    the rest (12.5, 2**53, NaN) is the scalar rule's."""
    numbers = column.cast(pa.float64()).fill_null(0.5).to_numpy()  # (B,)
    with np.errstate(invalid="ignore"):
        ok = (np.abs(numbers) < FLOAT_EXACT) & (np.floor(numbers) == numbers)
    integers = pa.array(np.where(ok, numbers, 0).astype(np.int64))
    return ok, integers.cast(pa.string())


def id_column(column: Column | None, length: int, name: str) -> Parsed:
    return parse_column(column, length, name, parse_id, pa.string(), _fast_id)


def item_id_column(column: Column | None, length: int, name: str = "item_id") -> Parsed:
    """``id_column`` for the ids of items written (``parse_item_id``)."""

    def fast(c):
        ok, values = _fast_id(c)
        tail = pc.ends_with(values, ITEM_ROUTE_TAIL).fill_null(False)
        return ok & ~tail.to_numpy(zero_copy_only=False), values

    return parse_column(column, length, name, parse_item_id, pa.string(), fast)


def text_column(column: Column | None, length: int, name: str) -> Parsed:
    fast = lambda c: _fast_text(c, _TEXT_BAD_RE2, MAX_TEXT_LENGTH)  # noqa: E731
    return parse_column(column, length, name, parse_text, pa.string(), fast)


def weight_column(column: Column | None, length: int, name: str) -> Parsed:
    fast = lambda c: _fast_float(c, minimum=0.0, maximum=MAX_WEIGHT)  # noqa: E731
    return parse_column(column, length, name, parse_weight, pa.float64(), fast)


def timestamp_column(column: Column | None, length: int, name: str = "timestamp") -> Parsed:
    if isinstance(column, pa.Array) and (
        pa.types.is_timestamp(column.type) or pa.types.is_date(column.type)
    ):
        column = _within_python_range(column)
    rule = parse_timestamp
    return parse_column(column, length, name, rule, pa.timestamp("us"), _fast_timestamp)


def event_column(column: Column | None, length: int, name: str = "event") -> Parsed:
    return parse_unique(column, length, name, parse_event, pa.string())


def bool_column(column: Column | None, length: int, name: str) -> Parsed:
    return parse_unique(column, length, name, parse_bool, pa.bool_())


def attribute_column(column: Column | None, length: int, name: str) -> Parsed:
    return parse_unique(column, length, f"attribute {name!r}", attribute_value)


def image_column(column: Column | None, length: int, name: str, root: Path) -> Parsed:
    """Paths relative to ``root`` that name existing photos in it -> absolute paths. A path
    that leaves ``root`` (``..``, an absolute path elsewhere) is refused: the service serves
    an item's image to anyone who asks; so is a file that is no PNG, JPEG, WebP or GIF by its
    first bytes (``photo_format``: an HTML file named .png was listed with an image the
    service then refused to serve)."""
    inside = os.path.normpath(os.path.abspath(root))
    real_root = Path(inside).resolve()

    def rule(value: Any, column_name: str) -> str:
        relative = str(value).strip()
        path = root / relative
        outside = f"{column_name} {shown(relative)} is outside the images root {root}"
        if os.path.commonpath([inside, os.path.normpath(os.path.abspath(path))]) != inside:
            raise BadValue(f"{outside}; give a path in it")
        if not os.path.isfile(path):
            raise MissingFile(f"{column_name} {relative!r} not found under {root}")
        real = path.resolve()
        if not real.is_relative_to(real_root):  # a link in the root to a file elsewhere
            raise BadValue(f"{outside} once its links are followed; give a file in it")
        if photo_format(real) is None:  # as an item write's photo: the service serves no other
            raise BadValue(f"{column_name} {shown(relative)} is not a PNG, JPEG, WebP or GIF")
        return str(real)

    return parse_unique(column, length, name, rule, pa.string())
