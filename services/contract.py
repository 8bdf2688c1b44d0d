"""``@endpoint``: a view's contract (query, body and response models) in one place.

The decorator validates the request through the declared pydantic models, passes the parsed
models to the view (``query=``, ``body=``, ``form=``), serializes the model the view returns,
and keeps the contract on the view, where ``services.openapi`` reads it to build
``/openapi.json``. One declaration therefore drives validation, the answer and the document.

A view may return its answer as plain data (dicts and lists, in the declared model's shape)
instead of a model: it is serialized as it is, without building the model again. The ranked
lists do (a feed is a hundred rows and reasons; validating what the service itself built was
a third of serializing it), and ``tests/test_service_fuzz.py`` checks every answer against
the declared schema.

Why pydantic v2 with this small decorator, not flask-openapi3, spectree or flask-smorest:
pydantic is the schema library those integrations build on (and the one FastAPI uses), so the
models are the same either way; what the integrations add is their own error bodies and query
parsing, and here both must stay as they were. Every error keeps the one shape of
``services.errors`` with a message naming the field (``events[0].colour: unknown field``), and
attribute filters are free-form query parameters (any undeclared name), which the integrations'
query models do not express. The decorator and the document builder together are smaller than
the glue needed to bend an integration to that.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args
from urllib.parse import unquote_to_bytes

import pydantic_core
from flask import Response, current_app, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from recsys.scopes import ADMIN, SCOPES
from services.errors import ApiError, bad_parameter

JSON = "application/json"


@dataclass(frozen=True)
class Raw:
    """A response that is not a JSON model (an image, Prometheus text): one media type, or
    the several it may come in (each declared: a generated client takes no wildcard)."""

    media_type: str | tuple[str, ...]
    description: str

    @property
    def media_types(self) -> tuple[str, ...]:
        return (self.media_type,) if isinstance(self.media_type, str) else self.media_type


@dataclass(frozen=True)
class Contract:
    summary: str
    query: type[BaseModel] | None
    body: type[BaseModel] | None  # JSON
    form: type[BaseModel] | None  # multipart/form-data files
    responses: dict[int, type[BaseModel] | Raw]  # the success answer(s)
    errors: tuple[int, ...]
    # The scope a caller needs (recsys.scopes); services.auth enforces it unless the settings
    # make it public. None: open to all (probes, the document).
    scope: str | None
    # Which of the settings' rate limits applies: "write" or "search" (services.limits).
    rate_limit: str | None


def endpoint(
    *,
    responses: dict[int, type[BaseModel] | Raw],
    query: type[BaseModel] | None = None,
    body: type[BaseModel] | None = None,
    form: type[BaseModel] | None = None,
    errors: tuple[int, ...] = (),
    scope: str | None = None,
    rate_limit: str | None = None,
    bearer: bool = False,
) -> Callable:
    """Declare a view's contract; put it under the ``@bp.get(...)``/``@bp.post(...)`` line.

    ``bearer=True`` is the older spelling of ``scope="admin"``.
    """
    scope = ADMIN if bearer else scope
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
    if rate_limit not in (None, "write", "search"):
        raise ValueError(f"rate_limit {rate_limit!r} is not 'write' or 'search'")

    def decorate(view: Callable) -> Callable:
        summary = (view.__doc__ or view.__name__).strip().splitlines()[0]
        contract = Contract(summary, query, body, form, responses, errors, scope, rate_limit)
        status = next(iter(responses))

        @functools.wraps(view)
        def wrapper(**path: str):
            answer, code, headers = view(**path, **_inputs(contract)), status, None
            if isinstance(answer, tuple):  # (answer, another success status it declares[,
                answer, code, *more = answer  # headers])
                headers = more[0] if more else None
                if code not in responses:
                    raise ValueError(f"{view.__name__} answered {code}, not in its responses")
            if isinstance(answer, BaseModel):
                body = answer.model_dump_json()
                return Response(body, status=code, headers=headers, mimetype=JSON)
            if isinstance(answer, dict):
                body = pydantic_core.to_json(answer)
                return Response(body, status=code, headers=headers, mimetype=JSON)
            return answer

        wrapper.contract = contract
        return wrapper

    return decorate


def contract_of(view: Callable) -> Contract | None:
    return getattr(view, "contract", None)


# Query parameters any route lets by: a cache-buster (jQuery's ``_=``) and campaign tags.
IGNORED = ("_",)
IGNORED_PREFIXES = ("utm_",)


def _unknown(args, declared) -> list[str]:
    """The names of ``args`` not ``declared`` and not ``IGNORED``, in order."""
    return [
        name or "(a parameter without a name)"
        for name in args
        if name not in declared and name not in IGNORED and not name.startswith(IGNORED_PREFIXES)
    ]


def _inputs(contract: Contract) -> dict[str, BaseModel]:
    """The parsed query, JSON body and form; a view declaring both a body and a form takes
    either, by the request's content type (multipart/form-data: the form). A view without
    a query model takes no query parameter (``?dry_run=true`` on a DELETE erased)."""
    inputs = {}
    if contract.query is not None:
        inputs["query"] = validated(contract.query, _query_values(contract.query))
    elif unknown := _unknown(request.args, ()):
        raise bad_parameter(unknown[0], "unknown parameter; this endpoint takes none")
    if contract.body is None and contract.form is None:
        return inputs
    multipart = request.mimetype == "multipart/form-data"
    if contract.body is not None and not (contract.form is not None and multipart):
        inputs["body"] = validated(contract.body, _json_body())
    elif contract.form is not None:
        given = Counter(name for name, values in request.files.lists() for _ in values)
        given.update(name for name, values in request.form.lists() for _ in values)
        for name, times in given.items():  # the first was read and the others dropped
            if times > 1:
                raise bad_parameter(name, f"is given {times} times; give it once")
        files = {name: upload.read() for name, upload in request.files.items()}
        fields = {name: value.encode() for name, value in request.form.items()}
        inputs["form"] = validated(contract.form, {**fields, **files})
    return inputs


def _query_values(model: type[BaseModel]) -> dict[str, Any]:
    """Declared parameters (each one value: a repeat is a 400, where ``?k=1&k=2`` took the
    first); with ``extra="allow"``, every other one too (a list when repeated: an attribute
    filter with several values); with ``extra="forbid"``, another one is a 400 naming it
    and the allowed ones (``IGNORED`` aside)."""
    declared, args = model.model_fields, request.args  # the proxy looked up once
    values = {}
    forbid = model.model_config.get("extra") == "forbid"
    if forbid and (unknown := _unknown(args, declared)):
        raise bad_parameter(unknown[0], f"unknown parameter; allowed: {', '.join(declared)}")
    for name in declared:
        if name in args:
            given = args.getlist(name)
            if len(given) > 1:
                raise bad_parameter(name, f"is given {len(given)} times; give it once")
            values[name] = given[0]
    if model.model_config.get("extra") == "allow":
        for name, given in args.lists():
            if name in _unknown([name], declared):
                # filters[department]=tops: the document's filters object as a deepObject
                # client spells it (openapi-fetch's default), not form-exploded
                inner = _DEEP_KEY.fullmatch(name)
                if inner and inner[1] in declared and inner[1] in _FILTER_FIELDS:
                    if inner[1] in values:  # in_stock=true&filters[in_stock]=false
                        raise bad_parameter(inner[1], "is given twice; give it once")
                    values[inner[1]] = given[0] if len(given) == 1 else given
                    continue
                if inner and inner[1] not in declared:
                    name = inner[1]
                # both spellings of one attribute: every value counts, in either order
                given = [*_listed(values.get(name)), *given]
                values[name] = given if len(given) > 1 else given[0]
    for name, given in args.lists():
        if any("%" in value for value in given) and not _utf8(name):
            raise bad_parameter(name, "is not UTF-8 text; percent-encode the text's UTF-8 bytes")
    return values


_DEEP_KEY = re.compile(r"filters\[([^\[\]]+)\]")
# declared parameters that are filters too: filters[in_stock] is in_stock (it was refused
# while the message named in_stock as filterable)
_FILTER_FIELDS = frozenset({"in_stock"})


def _listed(value: Any) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]


def _utf8(name: str) -> bool:
    """Whether every value of ``name`` in the raw query string is UTF-8. The query parser
    leaves the escapes of bytes that are not as they came (``q=%FF`` reads as the text
    "%FF", which a search then looked for), as it does a client's own "%" (sent as %25)."""
    for pair in request.query_string.split(b"&"):
        key, _, value = pair.partition(b"=")
        if unquote_to_bytes(key.replace(b"+", b" ")).decode("utf-8", "replace") == name:
            try:
                unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                return False
    return True


def _json_body() -> Any:
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "send a JSON body (Content-Type: application/json)"
        )
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # the JSON decoder gives up near 1,000 levels
        raise bad_parameter("body", "is nested too deeply (send at most a few levels)") from None
    if body is None:
        data = request.get_data(cache=True)
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        if limit and len(data) >= limit:  # a chunked body, cut at the limit: not a 400
            raise RequestEntityTooLarge()
        raise bad_parameter("body", _not_json(data))
    return body


def _not_json(data: bytes) -> str:
    """What is wrong with a body Flask could not read as JSON."""
    try:
        json.loads(data)
    except ValueError as exc:
        if "digits" in str(exc):  # Python reads at most 4,300 digits of an integer
            return "holds a number too long to read (thousands of digits)"
        if isinstance(exc, json.JSONDecodeError):
            return f"is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        return "is not valid JSON"
    return "must be a JSON object, not null"


def validated(model: type[BaseModel], data: Any) -> BaseModel:
    """``data`` as ``model``, or a 400 naming the first wrong field and what it should be."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise bad_parameter(*_explain(model, data, error)) from None
    except RecursionError:
        raise bad_parameter("body", "is nested too deeply (send at most a few levels)") from None


def _explain(model: type[BaseModel], data: Any, error: dict) -> tuple[str, str]:
    """(field path as the client wrote it, message) for one pydantic error."""
    path = _path(error["loc"], data, error["type"] == "missing")
    owner = _model_at(model, path)
    field = path[-1] if path else None
    if error["type"] == "extra_forbidden":
        return _name(path), f"unknown field; allowed: {', '.join(owner.model_fields)}"
    if error["type"] == "missing":
        described = owner.model_fields[field].description if field in owner.model_fields else None
        return _name(path), "is required" + (f" ({described})" if described else "")
    if error["type"] in {"model_type", "model_attributes_type", "dict_type"}:
        return _name(path), "must be a JSON object"
    message, given = error["msg"], repr(error.get("input")) if _scalar(error.get("input")) else ""
    if isinstance(field, str) and message.startswith(f"{field} "):
        message = message[len(field) + 1 :]  # our own rules name the field; the frame does
    shown = f", got {given}" if given and len(given) <= 60 and given not in message else ""
    return _name(path), message + shown


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float)


def _path(loc: tuple, data: Any, missing: bool) -> list[str | int]:
    """The part of ``loc`` that indexes into the data the client sent: pydantic appends the
    name of the union member that failed (``filters.in_stock.bool``), which the client never
    wrote; a missing field is the one part that is not in the data."""
    path: list[str | int] = []
    for part in loc:
        if _holds(data, part):
            data = data[part]
        elif not (missing and part == loc[-1]):
            break
        path.append(part)
    return path


def _holds(data: Any, part: str | int) -> bool:
    if isinstance(data, dict):
        return part in data
    return isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)


def _name(path: list[str | int]) -> str:
    """``["events", 0, "colour"]`` -> ``events[0].colour``; the empty path is the body."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else part
    return name or "body"


def _model_at(model: type[BaseModel], path: list[str | int]) -> type[BaseModel]:
    """The model that declares the last field of ``path`` (list indexes are skipped)."""
    for part in path[:-1]:
        if isinstance(part, str) and part in model.model_fields:
            model = _inner_model(model.model_fields[part].annotation) or model
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _inner_model(argument)
        if found is not None:
            return found
    return None
