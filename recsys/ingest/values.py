"""Parsing and normalising single values from any input format.

Every parser takes the raw value (str from CSV, typed from Parquet/JSON) and either returns
the normalised value or raises ``BadValue`` with a message that names the problem.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from typing import Any

from recsys.catalog.models import AttributeKind

MAX_ID_LENGTH = 255
_EVENT = re.compile(r"^[a-z][a-z0-9_\-]{0,31}$")
_ISO_DATE = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$"
)
_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n"}
# Epoch seconds later than this (year 2286) are almost surely milliseconds.
_MAX_EPOCH_SECONDS = 10_000_000_000


class BadValue(ValueError):
    """A value that cannot be parsed; the message is shown to the user."""


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def parse_id(value: Any, column: str) -> str:
    """External ids are strings: ``12``, ``12.0`` and ``"12"`` are all ``"12"``."""
    if isinstance(value, bool):
        raise BadValue(f"{column} {value!r} is a boolean, expected an id")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if "\ufffd" in text:
        raise BadValue(f"{column} {text!r} is not valid UTF-8")
    if len(text) > MAX_ID_LENGTH:
        raise BadValue(f"{column} is {len(text)} characters long, the limit is {MAX_ID_LENGTH}")
    return text


def parse_float(value: Any, column: str) -> float:
    if isinstance(value, bool):
        raise BadValue(f"{column} {value!r} is a boolean, expected a number")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise BadValue(f"{column} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise BadValue(f"{column} {value!r} is not a finite number")
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
    raise BadValue(f"{column} {value!r} is not a boolean; use true/false, yes/no or 1/0")


def parse_timestamp(value: Any, column: str = "timestamp") -> datetime:
    """ISO 8601 (naive means UTC) or epoch seconds -> naive UTC datetime."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    else:
        moment = _parse_timestamp_text(value, column)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _parse_timestamp_text(value: Any, column: str) -> datetime:
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not math.isfinite(seconds) or abs(seconds) >= _MAX_EPOCH_SECONDS:
            raise BadValue(
                f"{column} {text} is out of range for epoch seconds (milliseconds? divide by 1000)"
            )
        return datetime.fromtimestamp(seconds, UTC)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise BadValue(f"{column} {text!r} is neither ISO 8601 nor epoch seconds") from None


def parse_event(value: Any) -> str:
    text = str(value).strip().lower()
    if not _EVENT.match(text):
        raise BadValue(
            f"event {value!r} must be a short name: a letter, then up to 31 letters, "
            "digits, '_' or '-' (e.g. view, click, cart, purchase)"
        )
    return text


def attribute_value(value: Any) -> Any:
    """Normalise a tabular attribute: numbers stay numbers, ``a|b|c`` becomes a list,
    dates become ISO strings, other text is stripped. Missing values return None."""
    if is_missing(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return int(value) if isinstance(value, float) and value.is_integer() else value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        raise BadValue("is a nested object; flatten it into separate columns")
    if isinstance(value, list | tuple):
        items = [str(v).strip() for v in value if not is_missing(v)]
        return items or None
    text = str(value).strip()
    number = _number_or_none(text)
    if number is not None:
        return number
    if "|" in text:
        return [part.strip() for part in text.split("|") if part.strip()] or None
    return text


def _number_or_none(text: str) -> int | float | None:
    # Keep identifiers like "007" or "02134" as text: the leading zero is meaningful.
    if len(text) > 1 and text[0] == "0" and text[1].isdigit():
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    return (
        int(number)
        if number.is_integer() and "." not in text and "e" not in text.lower()
        else number
    )


def value_kind(value: Any) -> AttributeKind:
    """The kind a single normalised attribute value suggests."""
    if isinstance(value, list):
        return AttributeKind.MULTI
    if isinstance(value, int | float) and not isinstance(value, bool):
        return AttributeKind.NUMERIC
    if isinstance(value, str):
        if _ISO_DATE.match(value):
            return AttributeKind.DATE
        if len(value) >= 40 or value.count(" ") >= 3:
            return AttributeKind.TEXT
    return AttributeKind.CATEGORICAL


def column_kind(values: list[Any]) -> AttributeKind | None:
    """The kind of a column from its non-missing normalised values (None if all missing).

    All numbers -> numeric; all dates -> date; mostly long/multi-word strings -> text;
    any multi-valued -> multi; anything else -> categorical.
    """
    kinds = [value_kind(v) for v in values if v is not None]
    if not kinds:
        return None
    distinct = set(kinds)
    if len(distinct) == 1:
        return distinct.pop()
    if kinds.count(AttributeKind.TEXT) * 2 >= len(kinds):
        return AttributeKind.TEXT
    if AttributeKind.MULTI in distinct:
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
