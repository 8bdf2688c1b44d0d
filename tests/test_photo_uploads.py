"""Uploaded photos belong to their catalog however a host's URL reaches it: two hosts of one
shop reaching one PostgreSQL as ``127.0.0.1`` and ``localhost`` stored one photo twice, and a
photo uploaded through one was never removed through the other."""

from __future__ import annotations

import io
import os

from PIL import Image
from sqlalchemy.engine import make_url

from recsys.catalog import connect
from recsys.ingest.item_writes import (
    drop_unused_photo,
    patch_item,
    put_item,
    save_photo,
    upload_catalog,
)
from tests.shop_fixture import item_image


def respelled(db_url: str, tmp_path) -> str:
    """Another URL of the same database: its host spelled otherwise, or a SQLite file reached
    through a link."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        link = tmp_path / "elsewhere" / "catalog.db"
        link.parent.mkdir()
        os.symlink(url.database, link)
        return f"sqlite:///{link}"
    host = "localhost" if url.host in ("127.0.0.1", None) else "127.0.0.1"
    return url.set(host=host).render_as_string(hide_password=False)


def png(k: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(item_image("a", k)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_photo_uploaded_through_one_url_is_the_catalogs_through_another(engine, db_url, tmp_path):
    other = connect(respelled(db_url, tmp_path))
    root = tmp_path / "images"
    root.mkdir()
    (root / "plain.png").write_bytes(png(2))
    try:
        assert upload_catalog(other) == upload_catalog(engine)
        photo = save_photo(root, png(1), ".png", upload_catalog(engine))
        put_item(engine, "x", {"title": "X"}, root, photo)
        # the same photo through the other URL is the same file, not a second one
        assert save_photo(root, png(1), ".png", upload_catalog(other)) == photo
        assert len(list((root / "uploads").iterdir())) == 1
        written = patch_item(other, "x", {"image": "plain.png"}, root)
        assert written.replaced_photo == str(photo)
        drop_unused_photo(other, written.replaced_photo, root)
        assert not photo.exists()  # no item names it: removed through either URL
    finally:
        other.dispose()
