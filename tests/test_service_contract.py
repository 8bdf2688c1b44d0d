"""The HTTP contract is declared once: the models in ``services.schemas`` (and any model an
``@endpoint`` declares) both validate requests and make up ``/openapi.json``."""

from __future__ import annotations

from flask import Blueprint, Flask
from openapi_spec_validator import validate
from pydantic import BaseModel, Field

from recsys.settings import Settings
from services import errors
from services.app import BLUEPRINTS, create_app
from services.contract import endpoint
from services.openapi import openapi_document
from services.schemas import MAX_K, Page, RankRequest, Status


class Probe(BaseModel):
    n: int = Field(3, ge=2, le=7, description="How many")


class Echo(BaseModel):
    """The number back"""

    n: int


def probe_app() -> Flask:
    bp = Blueprint("probe", __name__)

    @bp.get("/probe")
    @endpoint(query=Probe, responses={200: Echo}, errors=(400,))
    def probe(query: Probe) -> Echo:
        """A probe"""
        return Echo(n=query.n)

    app = Flask(__name__)
    errors.init_app(app)
    app.register_blueprint(bp)
    return app


def parameter(document: dict, path: str, method: str, name: str) -> dict:
    parameters = document["paths"][path][method]["parameters"]
    return next(p for p in parameters if p["name"] == name)


def test_a_bound_declared_in_a_model_is_in_the_document_and_enforced():
    app = probe_app()
    document = openapi_document(app)
    n = parameter(document, "/probe", "get", "n")
    assert n["schema"] == {"default": 3, "minimum": 2, "maximum": 7, "type": "integer"}
    assert n["description"] == "How many" and n["required"] is False
    answer = document["paths"]["/probe"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Echo"}
    assert document["components"]["schemas"]["Echo"]["required"] == ["n"]
    client = app.test_client()
    assert client.get("/probe?n=7").get_json() == {"n": 7}
    assert client.get("/probe").get_json() == {"n": 3}
    error = client.get("/probe?n=8").get_json()["error"]
    assert error["status"] == 400 and error["message"].startswith("n: ")


def test_the_service_document_comes_from_its_models():
    routes = Flask(__name__)
    for blueprint in BLUEPRINTS:
        routes.register_blueprint(blueprint)
    document = openapi_document(routes)
    k = parameter(document, "/v1/items/{item_id}/similar", "get", "k")
    assert k["schema"]["maximum"] == MAX_K and k["schema"]["default"] == 10
    filters = parameter(document, "/v1/users/{user_id}/recommendations", "get", "filters")
    assert filters["style"] == "form" and filters["explode"] is True
    body = document["paths"]["/v1/users/{user_id}/recommendations"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/RankRequest")
    declared = document["components"]["schemas"]["RankRequest"]["properties"]
    assert list(declared) == list(RankRequest.model_fields)
    health = document["paths"]["/healthz"]["get"]["responses"]["200"]
    assert health["content"]["application/json"]["schema"]["$ref"].endswith(f"/{Status.__name__}")
    assert "/openapi.json" not in document["paths"] and "/" not in document["paths"]
    # a generated client's function names: one per operation, named by its view
    names = [op["operationId"] for path in document["paths"].values() for op in path.values()]
    assert len(names) == len(set(names)) and "user_feed" in names and "rank_for_user" in names


def test_every_bound_in_the_service_document_is_a_json_schema_bound_the_service_keeps():
    """Bounds show as minimum / maximum (a bare ``ge`` is no JSON Schema keyword, so a client
    generated from the document would not know it), and a value at a declared maximum is
    accepted."""
    routes = Flask(__name__)
    for blueprint in BLUEPRINTS:
        routes.register_blueprint(blueprint)
    document = openapi_document(routes)
    stray = []

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            if "properties" not in where.rsplit("/", 1)[-1]:
                stray.extend(f"{where}/{key}" for key in ("ge", "le", "gt", "lt") if key in node)
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for n, value in enumerate(node):
                walk(value, f"{where}/{n}")

    walk(document, "")
    assert not stray
    diversity = document["components"]["schemas"]["RankRequest"]["properties"]["diversity"]
    assert (diversity["minimum"], diversity["maximum"]) == (0, 1)
    after = parameter(document, "/v1/items", "get", "after")["schema"]["anyOf"][0]["maximum"]
    assert Page.model_validate({"after": str(after)}).after == after


def test_the_service_document_is_valid_openapi_and_declares_its_503s(tmp_path):
    """It declared ``"default": null`` on fields that refuse null (9 of them: strict
    validators and client generators refused the document, and a generated client sent the
    nulls, each a 400), and no 503 on the reads and writes that answer one when the catalog
    database is away."""
    settings = Settings(database_url=f"sqlite:///{tmp_path}/none.db", artifacts_dir=tmp_path)
    app = create_app(settings, {"RELOAD_CHECK_SECONDS": 0, "LOAD_MODEL": False})
    document = app.test_client().get("/openapi.json").get_json()
    validate(document)  # raises on the first error
    in_stock = parameter(document, "/v1/items/{item_id}/similar", "get", "in_stock")
    assert in_stock["schema"] == {"type": "boolean"}
    without = [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "503" not in operation["responses"]
    ]
    assert sorted(without) == ["GET /healthz", "GET /metrics"]


def test_the_filters_body_declares_what_the_server_takes(tmp_path):
    """Filters declared a boolean for any attribute; the server refuses one except for
    in_stock (a 400): the document says strings or finite numbers, ranges of numeric and date
    attributes, or lists of them."""
    settings = Settings(database_url=f"sqlite:///{tmp_path}/none.db", artifacts_dir=tmp_path)
    app = create_app(settings, {"RELOAD_CHECK_SECONDS": 0, "LOAD_MODEL": False})
    schemas = app.test_client().get("/openapi.json").get_json()["components"]["schemas"]
    filters = schemas["Filters"]
    assert filters["properties"]["in_stock"]["type"] == "boolean"
    kinds = filters["additionalProperties"]["anyOf"]
    assert [kind.get("type") for kind in kinds] == ["string", "integer", "number", None, "array"]
    # a range of a numeric or date attribute: {"min": 100, "max": 500}, either key optional
    assert kinds[3]["$ref"].endswith("/RangeFilter")
    one = kinds[4]["items"]["anyOf"]
    assert {kind.get("type") for kind in one} == {"string", "integer", "number", None}
    range_ = schemas["RangeFilter"]
    assert set(range_["properties"]) == {"min", "max"} and not range_.get("required")
    assert range_["additionalProperties"] is False
    for value in (True, [True], float("nan")):
        try:
            RankRequest.model_validate({"filters": {"color": value}})
        except ValueError as exc:
            assert "string or finite number" in str(exc)
        else:
            raise AssertionError(f"{value!r} was taken")
    assert RankRequest.model_validate({"filters": {"in_stock": False, "c": [1, "a"]}})


def test_images_declare_the_concrete_types_they_are_sent_as(tmp_path):
    """/images/{item_id} declared its 200 as image/*, which openapi-python-client cannot
    use: each type the route sends (its file's format's) is declared."""
    settings = Settings(database_url=f"sqlite:///{tmp_path}/none.db", artifacts_dir=tmp_path)
    app = create_app(settings, {"RELOAD_CHECK_SECONDS": 0, "LOAD_MODEL": False})
    document = app.test_client().get("/openapi.json").get_json()
    validate(document)
    content = document["paths"]["/images/{item_id}"]["get"]["responses"]["200"]["content"]
    assert {"image/png", "image/jpeg", "image/webp", "image/gif"} <= set(content)
    assert "image/*" not in content
    assert all(
        kind["schema"] == {"type": "string", "format": "binary"} for kind in content.values()
    )


def test_every_operation_declares_the_servers_414_and_431(tmp_path):
    """gunicorn answers a too long request line (414, uri_too_long) and too many or too long
    headers (431, request_header_fields_too_large) in the error shape on every path: the
    document declared neither."""
    settings = Settings(database_url=f"sqlite:///{tmp_path}/none.db", artifacts_dir=tmp_path)
    app = create_app(settings, {"RELOAD_CHECK_SECONDS": 0, "LOAD_MODEL": False})
    document = app.test_client().get("/openapi.json").get_json()
    validate(document)
    error = {"$ref": "#/components/schemas/Error"}
    for operations in document["paths"].values():
        for operation in operations.values():
            for status in ("414", "431"):
                assert operation["responses"][status]["content"]["application/json"] == {
                    "schema": error
                }


def test_the_document_declares_the_headers_answers_carry(tmp_path):
    """No response header was declared: ETag and Cache-Control on a JSON GET's 200 (with its
    304 for If-None-Match), Location on a created item, Retry-After on 202, 429 and 503,
    X-Request-ID on every answer of the app."""
    settings = Settings(database_url=f"sqlite:///{tmp_path}/none.db", artifacts_dir=tmp_path)
    app = create_app(settings, {"RELOAD_CHECK_SECONDS": 0, "LOAD_MODEL": False})
    document = app.test_client().get("/openapi.json").get_json()
    validate(document)
    assert set(document["components"]["headers"]) >= {"ETag", "Retry-After", "X-Request-ID"}

    def headers(path, method, status):
        return set(document["paths"][path][method]["responses"][status].get("headers", {}))

    feed = "/v1/users/{user_id}/recommendations"
    assert headers(feed, "get", "200") == {"ETag", "Cache-Control", "X-Request-ID"}
    assert headers(feed, "get", "304") >= {"ETag"}
    assert "If-None-Match" in {p["name"] for p in document["paths"][feed]["get"]["parameters"]}
    assert "304" not in document["paths"][feed]["post"]["responses"]
    assert "304" not in document["paths"]["/healthz"]["get"]["responses"]
    assert "Location" in headers("/v1/items/{item_id}", "put", "201")
    assert "Retry-After" in headers(feed, "get", "503")
    assert "Retry-After" in headers("/v1/admin/catalog/outliers", "get", "202")
    assert headers("/healthz", "get", "200") == {"X-Request-ID"}
    # a photo is revalidated too (send_file's ETag): the re-test found it undeclared
    assert headers("/images/{item_id}", "get", "200") >= {"ETag", "Cache-Control"}
    assert "304" in document["paths"]["/images/{item_id}"]["get"]["responses"]
