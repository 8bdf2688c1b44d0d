"""Schemathesis against /openapi.json: no request, however malformed, yields a 5xx, and
every response matches the documented schema (status codes, content types, bodies).

Requests carry the admin token (an API key with every scope), so guarded operations are fuzzed
past the credentials check, and the rate limits are set out of the fuzzer's reach."""

from __future__ import annotations

import os

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from recsys.model.fusion import TOKENS
from recsys.settings import Settings
from services.app import BLUEPRINTS, create_app
from services.openapi import openapi_document
from tests.shop_fixture import build_shop

TOKEN = "x" * 32
# Cases per operation; scripts/fuzz_service.py runs this file with 1,000.
EXAMPLES = int(os.environ.get("RECSYS_FUZZ_EXAMPLES", "40"))
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    url, artifacts = build_shop(tmp_path_factory.mktemp("fuzz-shop"))
    settings_ = Settings(
        database_url=url,
        artifacts_dir=artifacts,
        admin_token=TOKEN,
        write_rate_limit="100000/minute",
        search_rate_limit="100000/minute",
    )
    app = create_app(settings_, {"RELOAD_CHECK_SECONDS": 0})
    # The toy shop's weights stage gives the token term no weight; the demo catalogs give it
    # some, and a feed's token candidates are a path of their own (a filter no item passes
    # was a 500 there alone): fuzz it too.
    fused = app.extensions["recsys"].holder.state.recommender.fused
    weights = {**fused.weights_, TOKENS: 1.0}
    fused.set_weights(weights, fused.cold_scale_, fused.surface_weights_)
    assert fused.token_weight > 0
    return app


def operations():
    """(method, path) of every documented operation, read from the document itself (of an
    app with the service's routes and no database: test parameters are collected early)."""
    routes = Flask(__name__)
    for blueprint in BLUEPRINTS:
        routes.register_blueprint(blueprint)
    paths = openapi_document(routes)["paths"]
    return [(method.upper(), path) for path, item in paths.items() for method in item]


# Path ids are drawn from these as well as from arbitrary strings, so the fuzzer reaches
# real items and users (200s with full bodies), not only 404s.
KNOWN_IDS = {"item_id": ["a1", "b-new", "a3"], "user_id": ["u0", "u9", "stranger"]}


@pytest.fixture(scope="module")
def api_schema(app):
    document = app.test_client().get("/openapi.json").get_json()
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in KNOWN_IDS:
                    known = {"enum": KNOWN_IDS[parameter["name"]]}
                    parameter["schema"] = {"anyOf": [known, known, parameter["schema"]]}
    schema = schemathesis.openapi.from_dict(document)
    schema.app = app
    return schema


@pytest.mark.parametrize(("method", "path"), operations())
def test_no_5xx_and_no_schema_violations(api_schema, method, path):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def fuzz(case):
        cases.append(case)
        case.call_and_validate(checks=CHECKS, headers={"Authorization": f"Bearer {TOKEN}"})

    cases = []
    fuzz()
    print(f"{method} {path}: {len(cases)} cases, none a 5xx or off the schema")
