"""``GET /openapi.json``, built from the app's routes and the models their ``@endpoint``
contracts declare (``services.schemas``): nothing here describes an endpoint by hand.

Paths and methods come from Flask's URL map, parameters from the query models' JSON schemas,
bodies and answers from the models as ``components/schemas``. Schemathesis checks the service
against this document in the tests.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema

from services.contract import JSON, Contract, Raw, contract_of
from services.schemas import Error

REF = "#/components/schemas/{model}"
ERRORS = {
    400: "Malformed parameter or body; the message names it",
    401: "No API key, or an unknown or revoked one (Authorization: Bearer <key>)",
    403: "The API key lacks the scope this endpoint needs",
    404: "Unknown item or path",
    409: "Conflict (e.g. the bundle was refused)",
    413: "Upload too large",
    414: "Request line (method, path and query) too long (code uri_too_long; answered by the "
    "server before the app, on every path)",
    415: "Body is not JSON",
    429: (
        "Too many requests (or unknown API keys) from this key or address; Retry-After says "
        "when to retry"
    ),
    431: "Too many or too long header fields (code request_header_fields_too_large; answered "
    "by the server before the app, on every path)",
    503: "No model bundle loaded, catalog database unavailable, or busy; Retry-After says when "
    "to retry",
}
# What the server (services/gunicorn.conf.py) answers before any route, in the error shape
SERVER_ERRORS = {414, 431}
_PATH_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


class _Untitled(GenerateJsonSchema):
    """JSON schemas without a ``title`` on every property (the name says it)."""

    def field_title_should_be_set(self, schema) -> bool:
        return False

    def default_schema(self, schema) -> dict[str, Any]:
        """A field that is absent by default (``None``) but refuses null declares no
        default: ``"default": null`` on a boolean made the document invalid OpenAPI, and a
        client generated from it sent the null, which the field refuses (a 400)."""
        json_schema = super().default_schema(schema)
        absent = "default" in json_schema and json_schema["default"] is None
        if absent and not _admits_null(json_schema):
            del json_schema["default"]
        return json_schema


def _admits_null(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(_admits_null(part) for part in schema.get("anyOf", schema.get("oneOf", [])))


def openapi_document(app: Flask) -> dict[str, Any]:
    operations = [
        (rule, method, contract)
        for rule in app.url_map.iter_rules()
        if (contract := contract_of(app.view_functions[rule.endpoint])) is not None
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
    ]
    refs, schemas = _components([contract for _, _, contract in operations])
    guarded = app.extensions.get("recsys.auth")  # absent: a bare app, every scope guarded
    # each operation named by its view (a generated client's function names); a view of
    # several methods or paths, by the method and path too
    uses = Counter(rule.endpoint for rule, _, _ in operations)
    paths: dict[str, dict[str, Any]] = {}
    for rule, method, contract in operations:
        path = _PATH_ARGUMENT.sub(r"{\1}", rule.rule)
        scope = contract.scope if guarded is None else guarded.get(rule.endpoint)
        operation = _operation(rule.rule, method, contract, refs, scope)
        name = rule.endpoint.rpartition(".")[2]
        if uses[rule.endpoint] > 1:
            name = f"{name}_{method.lower()}_{'_'.join(re.findall(r'[a-z]+', rule.rule))}"
        paths.setdefault(path, {})[method.lower()] = {"operationId": name, **operation}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "recsys",
            "version": "1",
            "description": "Similar items, home feeds and visual search. Every error has the "
            "body {error: {status, code, message}}.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "headers": HEADERS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`recsys keys create --scope ...`) or the admin "
                    "token; each operation lists the scope it needs.",
                }
            },
        },
    }


def _components(contracts: list[Contract]) -> tuple[dict, dict]:
    """({(model, mode): {"$ref": ...}}, the schemas) of every body and answer model."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Error, "serialization")]
    for contract in contracts:
        models += [(m, "validation") for m in (contract.body, contract.form) if m is not None]
        models += [
            (m, "serialization") for m in contract.responses.values() if not isinstance(m, Raw)
        ]
    refs, document = models_json_schema(
        list(dict.fromkeys(models)), ref_template=REF, schema_generator=_Untitled
    )
    return refs, document.get("$defs", {})


def _operation(
    rule: str, method: str, contract: Contract, refs: dict, scope: str | None
) -> dict[str, Any]:
    """One operation; ``scope``: the scope a caller needs here (None: public here)."""
    operation: dict[str, Any] = {"summary": contract.summary}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_ARGUMENT.findall(rule)
    ]
    if contract.query is not None:
        parameters += _query_parameters(contract.query)
    revalidated = _revalidated(rule, method, contract)
    if revalidated:
        parameters.append(
            {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "description": "The ETag of an answer kept: a 304 without a body while it holds",
                "schema": {"type": "string"},
            }
        )
    if parameters:
        operation["parameters"] = parameters
    content = {}  # a body, a form, or either (services.contract)
    if contract.body is not None:
        content[JSON] = {"schema": refs[contract.body, "validation"]}
    if contract.form is not None:
        content["multipart/form-data"] = {"schema": refs[contract.form, "validation"]}
    if content:
        operation["requestBody"] = {"required": True, "content": content}
    operation["responses"] = _with_headers(_responses(contract, refs, scope), method, revalidated)
    if scope is not None:
        # OpenAPI 3.1 lets a bearer requirement list role names: here, the key's scope.
        operation["security"] = [{"bearer": [scope]}]
    return operation


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One parameter per declared field; a model that allows extra fields takes every other
    name as an attribute filter (one ``filters`` object, exploded into the query)."""
    schema = model.model_json_schema(schema_generator=_Untitled)
    parameters = []
    for name, field in schema["properties"].items():
        field = dict(field)
        parameter = {"name": name, "in": "query", "required": name in schema.get("required", [])}
        if "description" in field:
            parameter["description"] = field.pop("description")
        parameters.append({**parameter, "schema": field})
    if model.model_config.get("extra") == "allow":
        parameters.append(
            {
                "name": "filters",
                "in": "query",
                "required": False,
                "description": " ".join((inspect.getdoc(model) or "").split()),
                "style": "form",
                "explode": True,
                # Form style writes an object as name=value pairs: one string per name.
                "schema": {"type": "object", "additionalProperties": {"type": "string"}},
            }
        )
    return parameters


def _responses(contract: Contract, refs: dict, scope: str | None) -> dict[str, Any]:
    responses = {}
    for status, answer in contract.responses.items():
        if isinstance(answer, Raw):
            content = {}
            for media_type in answer.media_types:
                schema = {"type": "string"}
                if not media_type.startswith("text/"):
                    schema["format"] = "binary"
                content[media_type] = {"schema": schema}
            responses[str(status)] = {"description": answer.description, "content": content}
        else:
            responses[str(status)] = _json(refs[answer, "serialization"], _first_line(answer))
    errors = set(contract.errors) | SERVER_ERRORS
    if scope is not None:
        # 429: too many unknown keys from the address; 503: the key's catalog read failed
        errors |= {401, 403, 429, 503}
    if contract.rate_limit is not None:
        errors.add(429)
    for status in sorted(errors):
        responses[str(status)] = _json(refs[Error, "serialization"], ERRORS[status])
    return responses


def _json(schema: dict, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _first_line(model: type[BaseModel]) -> str:
    return (model.__doc__ or model.__name__).strip().splitlines()[0]


# The headers answers carry (services.app's _revalidated, services.logs, services.errors,
# services.limits, the PUT of an item), declared once and named by each response.
HEADERS = {
    "ETag": {
        "description": "The answer's tag: send it back as If-None-Match to get a 304 while "
        "the answer is the same",
        "schema": {"type": "string"},
    },
    "Cache-Control": {
        "description": "no-cache (private, no-cache for a user's answers or a request that "
        "showed a key): keep the answer, revalidate it before each use",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before asking again",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Location": {"description": "The URL of what was created", "schema": {"type": "string"}},
    "X-Request-ID": {
        "description": "The request's id (the one sent, else a new one), as in the logs",
        "schema": {"type": "string"},
    },
}


def _revalidated(rule: str, method: str, contract: Contract) -> bool:
    """Whether the answer is tagged and revalidated: a JSON 200 of a GET under /v1/
    (services.app's ``_revalidated``) or an item's photo (``send_file``'s ETag, of the
    file's path, size and time)."""
    if method != "GET":
        return False
    answer = contract.responses.get(200)
    return (rule.startswith("/v1/") and isinstance(answer, type)) or rule.startswith("/images/")


def _with_headers(responses: dict[str, Any], method: str, revalidated: bool) -> dict[str, Any]:
    """``responses`` with the headers each carries, and the 304 of a revalidated GET."""
    if revalidated:
        responses["304"] = {"description": "Not modified: If-None-Match holds the answer's ETag"}
    for status, response in responses.items():
        names = [] if int(status) in SERVER_ERRORS else ["X-Request-ID"]  # gunicorn's own
        if revalidated and status in ("200", "304"):
            names += ["ETag", "Cache-Control"]
        if status in ("202", "429", "503"):
            names.append("Retry-After")
        if status == "201" and method == "PUT":
            names.append("Location")
        if names:
            response["headers"] = {name: {"$ref": f"#/components/headers/{name}"} for name in names}
    return dict(sorted(responses.items()))
