"""API keys: stored hashed, shown once, scoped, revocable; which endpoints need one."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from recsys.catalog import connect
from recsys.catalog.keys import create_key, find_key, list_keys, revoke_key
from recsys.catalog.models import ApiKey
from recsys.errors import InvalidInput, InvalidSettings
from recsys.settings import Settings
from services.app import create_app
from tests.shop_fixture import build_shop
from tests.test_service import TOKEN, assert_error

EVENT = {"events": [{"user_id": "u1", "item_id": "a1", "event": "view"}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_cli_shows_a_key_once_and_stores_only_its_hash(run_cli, engine, db_url):
    created = run_cli("keys", "create", "--scope", "events:write", "--scope", "users:read",
                      "--name", "importer")  # fmt: skip
    key = created.stdout.strip()
    assert key.startswith("rk_") and "shown once" in created.stderr
    info = find_key(engine, key)
    assert info.scopes == ("events:write", "users:read") and info.name == "importer"
    with Session(engine) as session:
        row = session.scalar(select(ApiKey))
    assert key not in (row.secret_hash, row.key_id, row.scopes)
    listed = run_cli("keys", "list").stdout
    assert info.key_id in listed and "events:write users:read" in listed and key not in listed
    run_cli("keys", "revoke", info.key_id)
    assert find_key(engine, key) is None
    assert "revoked" in run_cli("keys", "list").stdout
    (listed,) = json.loads(run_cli("keys", "list", "--json").stdout)
    assert listed["key_id"] == info.key_id and listed["scopes"] == ["events:write", "users:read"]
    assert not listed["active"] and listed["revoked_at"] and key not in str(listed)
    unknown = run_cli("keys", "revoke", "000000000000", expect_exit=2)
    assert "keys list" in unknown.output
    # the key itself names its id; a second revoke says when the first was (not "revoked")
    again = run_cli("keys", "revoke", key).output
    assert f"{info.key_id} was already revoked at " in again
    other = run_cli("keys", "create", "--scope", "feeds:read").stdout.strip()
    revoked = run_cli("keys", "revoke", other).output
    assert revoked.startswith("revoked ") and "until its key cache expires (30 s" in revoked
    assert find_key(engine, other) is None
    refused = run_cli("keys", "create", "--scope", "everything", expect_exit=2)
    assert "events:write" in refused.output  # names the scopes there are


def test_a_key_is_found_only_whole_and_unrevoked(engine):
    info, key = create_key(engine, ["feeds:read"])
    assert find_key(engine, key) == info
    assert find_key(engine, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert find_key(engine, "rk_nothing") is None and find_key(engine, "") is None
    revoke_key(engine, info.key_id)
    assert find_key(engine, key) is None and not list_keys(engine)[0].active
    with pytest.raises(InvalidInput, match="at least one scope"):
        create_key(engine, [])
    with pytest.raises(InvalidInput, match="unknown scope 'root'"):
        create_key(engine, ["root"])


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return build_shop(tmp_path_factory.mktemp("keys-shop"))


def service(shop, **settings):
    url, artifacts = shop
    settings = Settings(database_url=url, artifacts_dir=artifacts, admin_token=TOKEN, **settings)
    config = {"RELOAD_CHECK_SECONDS": 0, "KEY_CACHE_SECONDS": 0}
    return create_app(settings, config).test_client()


def test_writes_and_user_lists_need_a_key_with_the_scope(shop):
    client = service(shop)
    engine = connect(shop[0])
    _, writer = create_key(engine, ["events:write"])
    _, reader = create_key(engine, ["users:read"])
    missing = client.post("/v1/interactions", json=EVENT)
    assert_error(missing, 401, "events:write")
    assert 'scope="events:write"' in missing.headers["WWW-Authenticate"]
    assert_error(client.post("/v1/interactions", json=EVENT, headers=bearer("rk_guess")), 401)
    wrong = client.post("/v1/interactions", json=EVENT, headers=bearer(reader))
    assert_error(wrong, 403, "events:write")
    assert client.post("/v1/interactions", json=EVENT, headers=bearer(writer)).status_code == 201
    assert_error(client.get("/v1/users"), 401, "users:read")
    assert_error(client.get("/v1/users", headers=bearer(writer)), 403, "users:read")
    assert client.get("/v1/users", headers=bearer(reader)).status_code == 200
    assert client.get("/v1/users", headers=bearer(TOKEN)).status_code == 200  # admin token


def test_a_revoked_key_stops_working(shop):
    client = service(shop)  # KEY_CACHE_SECONDS 0: every request reads the key
    engine = connect(shop[0])
    info, key = create_key(engine, ["admin"])
    assert client.get("/v1/users", headers=bearer(key)).status_code == 200
    revoke_key(engine, info.key_id)
    assert_error(client.get("/v1/users", headers=bearer(key)), 401, "revoked")


def test_public_reads_need_no_key_and_read_none(shop):
    client = service(shop)
    garbage = bearer("not a key at all")  # not even looked at on a public endpoint
    for path in ("/v1/items/a1/similar?k=3", "/v1/users/u1/recommendations?k=3",
                 "/v1/items/a1", "/v1/items?limit=2", "/images/a1", "/metrics"):  # fmt: skip
        assert client.get(path, headers=garbage).status_code == 200, path


def test_an_options_request_says_the_methods_of_any_path_without_a_key(shop):
    """OPTIONS (a browser's preflight carries no credentials) is answered alike on guarded
    and public paths: the methods, no data."""
    client = service(shop)
    for path in ("/v1/interactions", "/v1/users", "/v1/items/a1", "/v1/admin/reload"):
        response = client.options(path)
        assert response.status_code == 200, path
        assert response.headers["Allow"] and not response.data, path


def test_which_reads_are_public_is_a_setting(shop):
    client = service(shop, public_scopes="items:read,users:read")
    assert client.get("/v1/users").status_code == 200
    assert client.get("/v1/items/a1/similar").status_code == 200
    assert_error(client.get("/v1/users/u1/recommendations"), 401, "feeds:read")
    assert_error(client.get("/metrics"), 401, "metrics:read")
    _, scraper = create_key(connect(shop[0]), ["metrics:read"])
    assert client.get("/metrics", headers=bearer(scraper)).status_code == 200
    closed = service(shop, public_scopes="none")
    assert_error(closed.get("/v1/items/a1/similar"), 401, "items:read")


def test_the_document_shows_each_guarded_operation_and_its_scope(shop):
    document = service(shop).get("/openapi.json").get_json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    write = document["paths"]["/v1/interactions"]["post"]
    assert write["security"] == [{"bearer": ["events:write"]}]
    assert {"401", "403", "429"} <= set(write["responses"])
    users = document["paths"]["/v1/users"]["get"]
    assert users["security"] == [{"bearer": ["users:read"]}]
    similar = document["paths"]["/v1/items/{item_id}/similar"]["get"]
    assert "security" not in similar and "401" not in similar["responses"]
    reload = document["paths"]["/v1/admin/reload"]["post"]
    assert reload["security"] == [{"bearer": ["admin"]}]


def test_bogus_keys_do_not_push_good_ones_out_of_a_workers_cache(engine, monkeypatch):
    """Every distinct bogus key took a slot, and at 10,000 the whole cache was cleared: good
    keys went back to the catalog on every request of a client sending random keys."""
    from services import auth

    info, key = create_key(engine, ["feeds:read"])
    cache = auth.KeyCache(engine, "", ttl=60.0)
    assert cache.principal(key).key_id == info.key_id
    monkeypatch.setattr(auth, "KEY_CACHE_SIZE", 5)
    lookups = []
    monkeypatch.setattr(auth, "find_key", lambda engine, k: lookups.append(k))
    for n in range(20):
        assert cache.principal(f"rk_{n:012x}_{'A' * 43}") is None
    assert cache.principal(key).key_id == info.key_id  # still cached: no lookup for it
    assert key not in lookups and len(lookups) == 20


def test_browsers_on_the_origins_named_may_call_the_api(shop):
    """There was no CORS at all: the shop's own pages could not call even the public reads
    from the browser."""
    closed = service(shop)
    origin = {"Origin": "https://shop.example"}
    assert (
        "Access-Control-Allow-Origin"
        not in closed.get("/v1/items/a1/similar", headers=origin).headers
    )
    client = service(shop, cors_origins="https://shop.example, http://localhost:3000")
    read = client.get("/v1/items/a1/similar?k=2", headers=origin)
    assert read.status_code == 200
    assert read.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Origin" in read.headers["Vary"]
    preflight = client.options(
        "/v1/interactions",
        headers={**origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"},
    )  # fmt: skip
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    allowed = preflight.headers["Access-Control-Allow-Headers"]
    assert "Authorization" in allowed and "X-Request-ID" in allowed  # the README asks for it
    other = client.get("/v1/items/a1/similar", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    refused = client.post("/v1/interactions", json=EVENT, headers=origin)  # still needs a key
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"]
    with pytest.raises(InvalidSettings, match=r"cors_origins: 'shop\.example/x' is not"):
        Settings.load(environ={"RECSYS_CORS_ORIGINS": "shop.example/x"})
