"""Range filters on numeric and date attributes: ``price=100..500``, ``release_date=2025-01-01..``.

A filter value on such an attribute is a range with inclusive bounds, either side optional
("100..500", "..500", "100.."; ``{"min": 100, "max": 500}``), or one value (exactly it; a date
alone is its whole day). A bundle keeps each attribute as one float64 array per item row (NaN:
no value; a date as seconds since 1970-01-01 UTC, naive times read as UTC), so a range is one
comparison per row; an item without a value never passes a range.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from recsys.errors import InvalidInput

RANGE_KINDS = ("numeric", "date")
SEPARATOR = ".."
DAY_SECONDS = 86_400.0
# The last moment of a day a date alone covers (seconds since 1970 are exact to ~1e-6 here).
DAY_END = DAY_SECONDS - 1e-3
# ASCII digits only: a full-width "１００" is no bound, as a full-width k=５ is no k
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_EPOCH = pd.Timestamp(0, tz="UTC")


@dataclass(frozen=True)
class Range:
    """Inclusive bounds on an attribute of ``kind`` (-inf / inf: that side open)."""

    kind: str
    lo: float
    hi: float

    def passes(self, values: np.ndarray) -> np.ndarray:
        """(n,) bool: values within the bounds (NaN, no value, never is)."""
        return (values >= self.lo) & (values <= self.hi)


class NumberColumn(NamedTuple):
    """A numeric or date attribute of a bundle's items, as range filters read it."""

    kind: str  # "numeric" or "date"
    values: np.ndarray  # (N,) float64 per item row; NaN: the item has no value


def forms(name: str, kind: str) -> str:
    """What a filter on attribute ``name`` of ``kind`` takes, for its error message."""
    if kind == "date":
        example, one = "2025-01-01..2025-06-30, ..2025-06-30 or 2025-01-01..", "one date"
        shape = '{"min": "2025-01-01", "max": "2025-06-30"}'
        words = (
            "dates as YYYY-MM-DD, a time after it optional, bounds inclusive, a date alone "
            "is its whole day"
        )
    else:
        example, one = "100..500, ..500 or 100..", "one number (exactly it)"
        shape = '{"min": 100, "max": 500}'
        words = "bounds inclusive"
    return (
        f"filters[{name!r}] is a {kind} attribute: it takes a range {example} ({words}), "
        f"{one}, or {shape} (either key optional); several for any of them"
    )


def looks_like_range(value: Any) -> bool:
    """Whether ``value`` is written as a range (a mapping, or text such as "1..5" whose
    sides are numbers, dates or nothing)."""
    if isinstance(value, Mapping | Range):
        return True
    if not isinstance(value, str) or SEPARATOR not in value:
        return False
    return all(
        not side.strip() or any(not math.isnan(number_of(kind, side)) for kind in RANGE_KINDS)
        for side in value.partition(SEPARATOR)[::2]
    )


def parse_range(name: str, kind: str, value: Any) -> Range:
    """One filter value on attribute ``name`` of ``kind`` as a ``Range``, or ``InvalidInput``
    naming the attribute and the forms it takes."""
    if isinstance(value, Range):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(str(key) for key in value if key not in ("min", "max"))
        given = {key: value[key] for key in ("min", "max") if value.get(key) is not None}
        if unknown or not given:
            raise InvalidInput(f"{forms(name, kind)}; got {dict(value)!r}")
        lo, hi = given.get("min"), given.get("max")
    elif isinstance(value, str) and SEPARATOR in value:
        lo, _, hi = value.partition(SEPARATOR)
        lo, hi = lo.strip() or None, hi.strip() or None
        if lo is None and hi is None:
            raise InvalidInput(f"{forms(name, kind)}; got {value!r}")
    else:  # one value: exactly it (a date alone: its day)
        lo = hi = value
    low = -math.inf if lo is None else _bound(name, kind, lo, value)
    high = math.inf if hi is None else _bound(name, kind, hi, value, upper=True)
    if low > high:
        raise InvalidInput(f"{forms(name, kind)}; got {value!r}, whose min is above its max")
    return Range(kind, low, high)


def _bound(name: str, kind: str, bound: Any, value: Any, upper: bool = False) -> float:
    found = number_of(kind, bound)
    if math.isnan(found):
        raise InvalidInput(f"{forms(name, kind)}; got {value!r}")
    if upper and kind == "date" and _DAY.fullmatch(str(bound).strip()):
        found += DAY_END
    return found


def number_of(kind: str, value: Any) -> float:
    """One attribute value as the range arrays hold it: a finite number, or for a date the
    seconds since 1970 UTC; NaN for none, or for a value that is not one."""
    if kind == "date":
        if not isinstance(value, str) or not _DAY.match(value.strip()):
            return math.nan
        try:
            moment = pd.Timestamp(value.strip())
        except (ValueError, OverflowError):
            return math.nan
        if moment is pd.NaT:
            return math.nan
        moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
        return (moment - _EPOCH).total_seconds()
    if isinstance(value, bool | np.bool_):
        return math.nan
    if isinstance(value, str):
        value = value.strip()
        if not _NUMBER.fullmatch(value):
            return math.nan
    elif not isinstance(value, numbers.Real):
        return math.nan
    found = float(value)
    return found if math.isfinite(found) else math.nan


def column_numbers(kind: str, values: pd.Series) -> np.ndarray:
    """(n,) float64: a column's values as ``number_of`` reads each, set-wise."""
    if kind == "date":
        dates = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
        return (dates - _EPOCH).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
    if values.dtype == bool:  # True is no number
        return np.full(len(values), np.nan)
    if values.dtype == object:  # a mixed column may hold True; typed ones cannot
        kinds = values.map(type)  # a builtin per value: twice an isinstance's pace
        values = values.mask(kinds.eq(bool) | kinds.eq(np.bool_))
    numbers_ = pd.to_numeric(values, errors="coerce")
    found = np.array(numbers_.to_numpy(dtype=np.float64, na_value=np.nan))  # writable
    found[~np.isfinite(found)] = np.nan
    return found


def passes_any(ranges: list[Range], values: np.ndarray) -> np.ndarray:
    """(n,) bool: values within any of ``ranges``."""
    allowed = np.zeros(len(values), dtype=bool)
    for found in ranges:
        allowed |= found.passes(values)
    return allowed
