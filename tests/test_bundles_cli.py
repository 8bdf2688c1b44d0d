"""`recsys bundles list|activate`: roll back to an older bundle; refuse unknown or corrupt ones."""

from __future__ import annotations

from recsys.model.bundle import load_active
from recsys.model.training import train
from tests.shop_fixture import populate, train_config


def test_activate_an_older_bundle_and_refuse_bad_ones(engine, run_cli, tmp_path):
    populate(engine)
    old = train(engine, tmp_path, train_config())
    new = train(engine, tmp_path, train_config())
    listing = run_cli("bundles", "list").output.splitlines()
    assert listing[0].startswith(f"* {new.version}") and listing[1].startswith(f"  {old.version}")
    run_cli("bundles", "activate", old.version)
    assert load_active(engine).version == old.version
    missing = run_cli("bundles", "activate", "no-such-version", expect_exit=2)
    assert "no-such-version" in missing.output
    (new.path / "item_ids.npy").write_bytes(b"corrupt")
    corrupt = run_cli("bundles", "activate", new.version, expect_exit=2)
    assert "checksum" in corrupt.output
    assert load_active(engine).version == old.version
