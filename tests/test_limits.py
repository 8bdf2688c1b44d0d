"""Abuse limits: rate limits per key and per address shared by processes, bounded image work,
the image encoder loaded with the bundle."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from recsys.catalog import connect
from recsys.catalog.db import catalog_key
from recsys.catalog.keys import create_key, find_key, revoke_key
from recsys.errors import InvalidSettings
from recsys.settings import Settings
from recsys.vision import ImageEncoder
from services import limits
from services.app import create_app
from services.limits import SQLiteStorage
from tests.shop_fixture import build_shop, item_image
from tests.test_keys import EVENT, bearer
from tests.test_service import assert_error, png


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return build_shop(tmp_path_factory.mktemp("limits-shop"))


def service(database_url, artifacts, **settings):
    settings = Settings(database_url=database_url, artifacts_dir=artifacts, **settings)
    return create_app(settings, {"RELOAD_CHECK_SECONDS": 0})


def search(client, address: str, **kwargs):
    photo = {"image": (io.BytesIO(png(item_image("b", 3))), "q.png")}
    return client.post(
        "/v1/search/image?k=3", data=photo, environ_base={"REMOTE_ADDR": address}, **kwargs
    )


def test_visual_search_is_limited_per_address_in_every_worker(shop):
    database, artifacts = shop
    first = service(database, artifacts, search_rate_limit="3/minute").test_client()
    second = service(database, artifacts, search_rate_limit="3/minute").test_client()
    # Two apps over one catalog stand for two gunicorn workers: they share the counters.
    assert [search(c, "10.0.0.1").status_code for c in (first, second, first)] == [200] * 3
    refused = search(second, "10.0.0.1")
    assert_error(refused, 429, "3 per 1 minute")
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert search(first, "10.0.0.2").status_code == 200  # another address has its own count


def test_writes_are_limited_per_key_and_per_address(shop):
    client = service(*shop, write_rate_limit="2/minute", admin_token="t" * 20).test_client()
    engine = connect(shop[0])
    _, key = create_key(engine, ["events:write"])
    _, other = create_key(engine, ["events:write"])

    def write(key: str, address: str) -> int:
        headers, environ = bearer(key), {"REMOTE_ADDR": address}
        return client.post("/v1/interactions", json=EVENT, headers=headers, environ_base=environ)

    # One key from many addresses: the key's count stops it.
    assert [write(key, f"10.1.0.{n}").status_code for n in range(3)] == [201, 201, 429]
    # Many keys from one address: the address's count stops them.
    assert [write(other, "10.2.0.1").status_code for _ in range(2)] == [201, 201]
    _, third = create_key(engine, ["events:write"])
    assert_error(write(third, "10.2.0.1"), 429, "per API key and per address")


def test_every_kind_of_write_counts_against_one_write_limit(shop):
    """Each write endpoint had its own counter: a key got the whole limit for events, again
    for PUT, again for PATCH and for DELETE (four times the documented rate)."""
    client = service(*shop, write_rate_limit="2/minute", admin_token="t" * 20).test_client()
    _, key = create_key(connect(shop[0]), ["events:write", "catalog:write"])
    environ = {"REMOTE_ADDR": "10.3.0.1"}

    def send(method: str, path: str, **body) -> int:
        call = getattr(client, method)
        return call(path, headers=bearer(key), environ_base=environ, **body).status_code

    assert send("post", "/v1/interactions", json=EVENT) == 201
    assert send("patch", "/v1/items/a1", json={"in_stock": True}) == 200
    assert send("put", "/v1/items/a-limit", json={"title": "x"}) == 429
    assert send("delete", "/v1/items/a1") == 429


def test_an_address_sending_unknown_keys_is_refused_before_they_are_looked_up(shop, monkeypatch):
    """Failed key checks were not counted: a client could try keys (or the admin token) as
    fast as the service answered, and each unknown key cost a catalog read."""
    from services import auth

    client = service(*shop, key_failure_rate_limit="3/minute", admin_token="t" * 20)
    client = client.test_client()
    _, good = create_key(connect(shop[0]), ["users:read"])
    lookups = []
    find_key = auth.find_key
    monkeypatch.setattr(auth, "find_key", lambda e, k: lookups.append(k) or find_key(e, k))

    def users(key: str, address: str = "10.9.0.1"):
        environ = {"REMOTE_ADDR": address}
        return client.get("/v1/users", headers=bearer(key), environ_base=environ)

    assert users(good).status_code == 200  # a key that works is no failure
    guesses = [f"rk_{n:012x}_{'A' * 43}" for n in range(5)]
    assert [users(key).status_code for key in guesses[:3]] == [401] * 3
    refused = users(guesses[3])
    assert_error(refused, 429, "too many unknown API keys")
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert guesses[3] not in lookups  # refused before the catalog is read
    assert users("t" * 19 + "x").status_code == 429  # admin token guesses count alike
    assert users(good).status_code == 200  # a key known to work still passes
    assert users(guesses[4], "10.9.0.2").status_code == 401  # another address: its own count


def test_a_key_that_worked_is_looked_up_again_while_its_address_is_over_the_limit(shop):
    """A key in use was refused (429) each time its cache entry expired while a stale client
    on the same host sent a revoked key past the failure limit: for 30 s at a time."""
    settings = Settings(
        database_url=shop[0], artifacts_dir=shop[1], key_failure_rate_limit="3/minute"
    )  # each key looked up on every request: its cache entry always expired
    client = create_app(settings, {"RELOAD_CHECK_SECONDS": 0, "KEY_CACHE_SECONDS": 0})
    client = client.test_client()
    engine = connect(shop[0])
    stale, revoked = create_key(engine, ["users:read"])
    _, good = create_key(engine, ["users:read"])

    def users(key: str):
        return client.get(
            "/v1/users", headers=bearer(key), environ_base={"REMOTE_ADDR": "10.9.1.1"}
        )

    assert users(good).status_code == users(revoked).status_code == 200
    revoke_key(engine, stale.key_id)
    assert [users(revoked).status_code for _ in range(4)] == [401, 401, 401, 429]
    assert users(good).status_code == 200  # it was a 429 for as long as the address was over
    revoke_key(engine, find_key(engine, good).key_id)
    assert users(good).status_code == 401  # looked up: revoked since, refused


def test_the_counters_file_is_shared_between_processes(tmp_path):
    uri = f"sqlite://{tmp_path / 'limits.db'}"
    script = (
        "import sys; from services.limits import SQLiteStorage; "
        "s = SQLiteStorage(sys.argv[1]); [s.incr('k', 60) for _ in range(5)]"
    )
    subprocess.run([sys.executable, "-c", script, uri], check=True)
    storage = SQLiteStorage(uri)
    assert storage.get("k") == 5 and storage.incr("k", 60) == 6
    assert storage.get("other") == 0


@pytest.mark.parametrize("error", ["database is locked", "disk I/O error"])
def test_a_worker_that_loses_the_race_to_set_up_the_counters_file_tries_again(
    tmp_path, monkeypatch, error
):
    """Workers booting together race to switch a new counters file to WAL; SQLite answers the
    losers "database is locked" at once. They retry; other errors still surface."""
    import sqlite3

    connect, losses = sqlite3.connect, [1, 2]

    class Racing:  # a connection whose first two switches to WAL lose the race
        def __init__(self, *args, **kwargs):
            self.connection = connect(*args, **kwargs)

        def execute(self, sql, *args):
            if sql == "PRAGMA journal_mode=WAL" and losses:
                losses.pop()
                raise sqlite3.OperationalError(error)
            return self.connection.execute(sql, *args)

        def close(self):
            self.connection.close()

    monkeypatch.setattr(sqlite3, "connect", Racing)
    storage = SQLiteStorage(f"sqlite://{tmp_path / 'limits.db'}")
    if error != "database is locked":
        with pytest.raises(sqlite3.OperationalError, match=error):
            storage.incr("k", 60)
        return
    assert storage.incr("k", 60) == 1 and not losses
    assert connect(tmp_path / "limits.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def png_header_only(width: int, height: int) -> bytes:
    """A small PNG file whose header says ``width`` x ``height`` RGBA (a decompression bomb's
    first bytes: a decoder would allocate width * height * 4 bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 4096)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def test_an_image_too_large_is_refused_from_its_header(shop):
    client = service(*shop).test_client()
    bomb = {"image": (io.BytesIO(png_header_only(13370, 13370)), "bomb.png")}
    assert_error(client.post("/v1/search/image", data=bomb), 400, "13370x13370")
    small_limit = service(*shop, max_image_pixels=100).test_client()
    photo = {"image": (io.BytesIO(png(item_image("a", 1))), "q.png")}
    assert_error(small_limit.post("/v1/search/image", data=photo), 400, "28x28")


def test_other_formats_than_the_four_photos_are_refused(shop):
    client = service(*shop).test_client()
    buffer = io.BytesIO()
    Image.fromarray(item_image("a", 1)).save(buffer, format="TIFF")
    upload = {"image": (io.BytesIO(buffer.getvalue()), "q.tiff")}
    assert_error(client.post("/v1/search/image", data=upload), 400, "PNG, JPEG, WebP or GIF")
    # a JPEG cut short: its header is a JPEG's, its pixels are what is wrong (it was told
    # "not a readable image (send PNG, JPEG, WebP or GIF)", as a TIFF is)
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="JPEG")
    cut = {"image": (io.BytesIO(buffer.getvalue()[: len(buffer.getvalue()) // 2]), "q.jpg")}
    assert_error(client.post("/v1/search/image", data=cut), 400, "damaged or cut short")


def test_a_busy_worker_answers_503_instead_of_queueing_image_work(shop, monkeypatch):
    import services.api

    monkeypatch.setattr(services.api, "IMAGE_WAIT_SECONDS", 0.01)
    app = service(*shop)
    slots = app.extensions["recsys"].image_slots
    assert slots.acquire(timeout=1)  # another request is decoding
    try:
        refused = search(app.test_client(), "10.9.0.1")
    finally:
        slots.release()
    assert_error(refused, 503, "busy")
    assert refused.headers["Retry-After"]
    assert search(app.test_client(), "10.9.0.2").status_code == 200


def test_the_image_encoder_is_loaded_with_the_bundle_not_on_the_first_search(shop, monkeypatch):
    loads = []
    original = ImageEncoder.load.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(ImageEncoder, "load", classmethod(counting))
    app = service(*shop)
    assert len(loads) == 1
    assert search(app.test_client(), "10.8.0.1").status_code == 200
    assert len(loads) == 1


def test_the_forking_process_imports_torch_only_for_a_bundle_with_an_image_encoder(shop, tmp_path):
    """Imported by each worker after the fork, torch was hundreds of MB of private memory
    per worker; the master imports it when the bundle's workers will load an encoder."""
    from services.app import preload_image_libraries

    database, artifacts = shop
    assert preload_image_libraries(Settings(database_url=database, artifacts_dir=artifacts))
    code = (
        "import sys; from recsys.settings import Settings; "
        "from services.app import preload_image_libraries as p; "
        f"print(p(Settings(database_url='sqlite:///{tmp_path}/none.db')), 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "False"], done.stderr  # no bundle: no torch


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("RECSYS_WRITE_RATE_LIMIT", "lots", "write_rate_limit 'lots' is not a rate limit"),
        ("RECSYS_SEARCH_RATE_LIMIT", "5/fortnight", "search_rate_limit"),
        ("RECSYS_KEY_FAILURE_RATE_LIMIT", "many", "key_failure_rate_limit"),
        ("RECSYS_MAX_IMAGE_PIXELS", "-1", "max_image_pixels"),
        ("RECSYS_PUBLIC_SCOPES", "items:read,everything", "unknown scope 'everything'"),
        # it took these, and anyone could reload bundles or write items without a key
        ("RECSYS_PUBLIC_SCOPES", "items:read,admin", "admin cannot be public"),
        ("RECSYS_PUBLIC_SCOPES", "catalog:write", "catalog:write cannot be public"),
        ("RECSYS_PUBLIC_SCOPES", "events:write", "events:write cannot be public"),
    ],
)
def test_bad_limit_and_scope_settings_name_the_setting(setting, value, message):
    with pytest.raises(InvalidSettings, match=message):
        Settings.load(environ={setting: value})


def test_two_shops_whose_urls_read_alike_keep_their_own_counters(tmp_path, monkeypatch):
    """Two shops served from their own folders with ``sqlite:///shop.db`` (the default URL is
    relative too) counted each other's failed keys: one file named after the URL's text."""
    names = []
    for shop in ("a", "b"):
        (tmp_path / shop).mkdir()
        monkeypatch.chdir(tmp_path / shop)
        names.append(limits.default_storage_uri("sqlite:///shop.db"))
    assert names[0] != names[1]
    assert limits.default_storage_uri(f"sqlite:///{tmp_path / 'b' / 'shop.db'}") == names[1]
    hidden = catalog_key("postgresql://shop:secret@db:5432/shop")
    assert hidden == "postgresql://shop:***@db:5432/shop"
