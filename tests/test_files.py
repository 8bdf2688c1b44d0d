"""What the product writes atomically is readable as a plain write would be: a service that
runs as another user than the trainer can read its bundles, photos and manifests."""

from __future__ import annotations

import os
import stat

import pytest

from recsys.ingest.item_writes import save_photo
from recsys.model.bundle import write_bundle


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_bundles_and_uploaded_photos_get_the_umasks_permissions(tmp_path, umask_022):
    bundle = write_bundle(tmp_path / "bundles", "v1", lambda d: (d / "a.npy").write_bytes(b"x"), {})
    assert mode(bundle) == 0o755 and mode(bundle / "manifest.json") == 0o644
    photo = save_photo(tmp_path / "images", b"\x89PNG not really", ".png")
    assert mode(photo) == 0o644
