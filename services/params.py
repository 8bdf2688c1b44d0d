"""Request parameters: parsed, bounded, and named in the 400 when wrong."""

from __future__ import annotations

from typing import Any

from werkzeug.datastructures import MultiDict

from services.errors import bad_parameter

MAX_K = 100
MAX_CANDIDATES = 1000
MAX_EVENTS = 1000
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def int_param(args: MultiDict, name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_parameter(name, f"{raw!r} is not an integer from {low} to {high}") from None
    return bounded_int(name, value, low, high)


def bounded_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad_parameter(name, f"must be an integer from {low} to {high}, got {value!r}")
    return value


def bool_param(args: MultiDict, name: str, default: bool) -> bool:
    raw = args.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise bad_parameter(name, f"{raw!r} is not true or false")


def query_filters(args: MultiDict, reserved: set[str]) -> dict[str, Any]:
    """Every query parameter not in ``reserved`` is an attribute filter (repeat = any of)."""
    filters: dict[str, Any] = {}
    for name in args:
        if name in reserved:
            continue
        values = args.getlist(name)
        if name == "in_stock":
            filters[name] = bool_param(args, name, True)
        else:
            filters[name] = values if len(values) > 1 else values[0]
    return filters


def json_filters(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_parameter("filters", "must be an object of attribute -> value or [values]")
    for name, wanted in value.items():
        items = wanted if isinstance(wanted, list) else [wanted]
        if not items or not all(isinstance(v, str | int | float | bool) for v in items):
            raise bad_parameter(f"filters.{name}", "must be a value or a non-empty list of values")
        if name == "in_stock" and not isinstance(wanted, bool):
            raise bad_parameter("filters.in_stock", "must be true or false")
    return value


def string_list(value: Any, name: str, limit: int) -> list[str]:
    ids = isinstance(value, list) and all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in value
    )
    if not ids:
        raise bad_parameter(name, "must be a list of ids")
    if not 1 <= len(value) <= limit:
        raise bad_parameter(name, f"must hold 1 to {limit} ids, got {len(value)}")
    return [str(v) for v in value]


def json_object(body: Any, allowed: set[str]) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise bad_parameter("body", "must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad_parameter(unknown[0], f"unknown field; allowed: {', '.join(sorted(allowed))}")
    return body
