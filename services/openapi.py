"""The OpenAPI 3 document of every endpoint (``GET /openapi.json``).

Kept beside the views and checked against them by schemathesis in the tests: every response
the service gives must match what is written here.
"""

from __future__ import annotations

from typing import Any

from services.params import MAX_CANDIDATES, MAX_EVENTS, MAX_K

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {
        400: "Malformed parameter or body; the message names it",
        401: "Missing or wrong bearer token",
        404: "Unknown item or path",
        405: "Method not allowed",
        409: "Conflict (e.g. the bundle was refused)",
        413: "Upload too large",
        415: "Body is not JSON",
        503: "No model bundle loaded or database unavailable",
    }
    return {str(s): _json(_ref("Error"), words[s]) for s in statuses}


def _k(default: int) -> dict[str, Any]:
    return {
        "name": "k",
        "in": "query",
        "required": False,
        "description": "Number of results",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": default},
    }


def _page(name: str, default: int, maximum: int) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": maximum, "default": default},
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


FILTERS = {
    "name": "filters",
    "in": "query",
    "required": False,
    "description": "Attribute filters, e.g. ?department=tops&brand=A&brand=B&in_stock=true "
    "(categorical and multi-valued attributes; repeat a name for any of several values). "
    "An attribute the model cannot filter on is a 400.",
    "style": "form",
    "explode": True,
    "schema": {"type": "object", "additionalProperties": {"type": "string"}},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "code", "message"],
                "properties": {
                    "status": {"type": "integer"},
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                },
            }
        },
    },
    "Item": {
        "type": "object",
        "required": ["item_id", "title", "image_url", "in_stock", "attributes"],
        "properties": {
            "item_id": {"type": "string"},
            "title": {"type": ["string", "null"]},
            "image_url": {"type": ["string", "null"], "description": "/images/<item_id>"},
            "in_stock": {"type": ["boolean", "null"]},
            "attributes": {"type": "object"},
        },
    },
    "ItemDetail": {
        "allOf": [
            _ref("Item"),
            {
                "type": "object",
                "required": ["in_model"],
                "properties": {"in_model": {"type": "boolean"}},
            },
        ]
    },
    "RankedItem": {
        "allOf": [
            _ref("Item"),
            {"type": "object", "required": ["score"], "properties": {"score": {"type": "number"}}},
        ]
    },
    "Similar": {
        "type": "object",
        "required": ["item_id", "model_version", "items"],
        "properties": {
            "item_id": {"type": "string"},
            "model_version": {"type": "string"},
            "items": {"type": "array", "items": _ref("RankedItem")},
        },
    },
    "Feed": {
        "type": "object",
        "required": ["user_id", "model_version", "fallback", "items"],
        "properties": {
            "user_id": {"type": "string"},
            "model_version": {"type": "string"},
            "fallback": {
                "type": "boolean",
                "description": "true: the user is unknown to the model (no events), so these "
                "are the most popular items passing the filters",
            },
            "items": {"type": "array", "items": _ref("RankedItem")},
        },
    },
    "RankRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 20},
            "exclude_seen": {"type": "boolean", "default": True},
            "candidates": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_CANDIDATES,
                "items": {"type": "string"},
                "description": "Rank only these item ids",
            },
            "filters": {
                "type": "object",
                "additionalProperties": {
                    "oneOf": [
                        {"type": ["string", "number", "boolean"]},
                        {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": ["string", "number", "boolean"]},
                        },
                    ]
                },
            },
        },
    },
    "VisualSearch": {
        "type": "object",
        "required": ["model_version", "items"],
        "properties": {
            "model_version": {"type": "string"},
            "items": {"type": "array", "items": _ref("RankedItem")},
        },
    },
    "Event": {
        "type": "object",
        "required": ["user_id", "item_id"],
        "additionalProperties": False,
        "properties": {
            "user_id": {"type": "string"},
            "item_id": {"type": "string"},
            "event": {"type": "string", "description": "view, click, cart, purchase, ..."},
            "weight": {"type": "number", "minimum": 0},
            "rating": {"type": "number", "minimum": 0},
            "timestamp": {
                "type": "string",
                "description": "ISO 8601 or epoch seconds; default: now",
            },
        },
    },
    "Events": {
        "type": "object",
        "required": ["events"],
        "additionalProperties": False,
        "properties": {
            "events": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_EVENTS,
                "items": _ref("Event"),
            }
        },
    },
    "Recorded": {
        "type": "object",
        "required": ["inserted", "updated", "unchanged", "users"],
        "properties": {
            "inserted": {"type": "integer"},
            "updated": {"type": "integer"},
            "unchanged": {"type": "integer"},
            "users": {"type": "array", "items": {"type": "string"}},
        },
    },
    "ItemPage": {
        "type": "object",
        "required": ["items", "total", "offset", "limit"],
        "properties": {
            "items": {"type": "array", "items": _ref("Item")},
            "total": {"type": "integer"},
            "offset": {"type": "integer"},
            "limit": {"type": "integer"},
        },
    },
    "UserPage": {
        "type": "object",
        "required": ["users", "offset", "limit"],
        "properties": {
            "users": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["user_id", "interactions"],
                    "properties": {
                        "user_id": {"type": "string"},
                        "interactions": {"type": "integer"},
                    },
                },
            },
            "offset": {"type": "integer"},
            "limit": {"type": "integer"},
        },
    },
    "Reloaded": {
        "type": "object",
        "required": ["previous_version", "model_version"],
        "properties": {
            "previous_version": {"type": ["string", "null"]},
            "model_version": {"type": "string"},
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}, "model_version": {"type": "string"}},
    },
}


def _paths() -> dict[str, Any]:
    limit = _page("limit", 24, 100)
    limit["schema"]["minimum"] = 1
    offset = _page("offset", 0, 10**9)
    return {
        "/v1/items": {
            "get": {
                "summary": "Browse the catalog",
                "parameters": [
                    offset,
                    limit,
                    {"name": "q", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": _json(_ref("ItemPage"), "A page of items"), **_errors(400)},
            }
        },
        "/v1/items/{item_id}": {
            "get": {
                "summary": "One catalog item",
                "parameters": [_path("item_id")],
                "responses": {"200": _json(_ref("ItemDetail"), "The item"), **_errors(404)},
            }
        },
        "/v1/items/{item_id}/similar": {
            "get": {
                "summary": "Items similar to this one (product page)",
                "parameters": [_path("item_id"), _k(10), FILTERS],
                "responses": {
                    "200": _json(_ref("Similar"), "Ranked similar items"),
                    **_errors(400, 404, 503),
                },
            }
        },
        "/v1/users": {
            "get": {
                "summary": "Browse users",
                "parameters": [offset, limit],
                "responses": {"200": _json(_ref("UserPage"), "A page of users"), **_errors(400)},
            }
        },
        "/v1/users/{user_id}/recommendations": {
            "get": {
                "summary": "A user's home feed",
                "parameters": [
                    _path("user_id"),
                    _k(20),
                    {
                        "name": "exclude_seen",
                        "in": "query",
                        "schema": {"type": "boolean", "default": True},
                    },
                    FILTERS,
                ],
                "responses": {"200": _json(_ref("Feed"), "Ranked items"), **_errors(400, 503)},
            },
            "post": {
                "summary": "Rank a given candidate list (or the catalog) for a user",
                "parameters": [_path("user_id")],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("RankRequest")}},
                },
                "responses": {
                    "200": _json(_ref("Feed"), "Ranked items"),
                    **_errors(400, 413, 415, 503),
                },
            },
        },
        "/v1/search/image": {
            "post": {
                "summary": "Visual search: catalog items that look like an uploaded photo",
                "parameters": [_k(10)],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["image"],
                                "properties": {"image": {"type": "string", "format": "binary"}},
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(_ref("VisualSearch"), "Ranked items"),
                    **_errors(400, 409, 413, 503),
                },
            }
        },
        "/v1/interactions": {
            "post": {
                "summary": "Record events; the users' next feeds reflect them (no retraining)",
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("Events")}}},
                "responses": {
                    "201": _json(_ref("Recorded"), "Stored (all or nothing)"),
                    **_errors(400, 413, 415),
                },
            }
        },
        "/v1/admin/reload": {
            "post": {
                "summary": "Switch to the registry's active bundle (atomically)",
                "security": [{"bearer": []}],
                "responses": {
                    "200": _json(_ref("Reloaded"), "Now serving the active bundle"),
                    **_errors(401, 409),
                },
            }
        },
        "/images/{item_id}": {
            "get": {
                "summary": "An item's image",
                "parameters": [_path("item_id")],
                "responses": {
                    "200": {
                        "description": "The image file",
                        "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    **_errors(404),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "responses": {"200": _json(_ref("Status"), "The process answers")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: model bundle loaded and database answering",
                "responses": {"200": _json(_ref("Status"), "Ready"), **_errors(503)},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "recsys",
            "version": "1",
            "description": "Similar items, home feeds and visual search. Every error has the "
            "body {error: {status, code, message}}.",
        },
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
