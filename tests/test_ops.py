"""services/ops.py's guarded endpoints: /metrics can be closed; reload takes any admin key."""

from __future__ import annotations

from recsys.catalog import connect, migrate
from recsys.catalog.keys import create_key
from recsys.model.training import train
from recsys.settings import Settings
from services.app import create_app
from tests.shop_fixture import populate, train_config


def test_metrics_closed_by_the_public_scopes_and_reload_open_to_admin_keys(tmp_path):
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = connect(url)
    migrate.upgrade(engine)
    populate(engine)
    train(engine, tmp_path / "artifacts", train_config(), "cpu")
    _, admin_key = create_key(engine, ("admin",), "ops")
    _, reader_key = create_key(engine, ("metrics:read",), "prometheus")
    settings = Settings(
        database_url=url, artifacts_dir=tmp_path / "artifacts", public_scopes="items:read"
    )
    client = create_app(settings, {"RELOAD_CHECK_SECONDS": 0}).test_client()
    assert client.get("/metrics").status_code == 401
    scraper = {"Authorization": f"Bearer {reader_key}"}
    assert client.get("/metrics", headers=scraper).status_code == 200
    assert client.post("/v1/admin/reload", headers=scraper).status_code == 403
    admin = {"Authorization": f"Bearer {admin_key}"}  # no RECSYS_ADMIN_TOKEN needed
    assert client.post("/v1/admin/reload", headers=admin).status_code == 200
