"""`recsys bundles list|activate|gc`: roll back to an older bundle; refuse unknown or corrupt
ones; remove old bundles and what killed training runs left, never the active one."""

from __future__ import annotations

import json

import pytest

from recsys.errors import InvalidBundle
from recsys.model.bundle import catalog_identity, load_active, read_manifest, write_bundle
from recsys.model.training import train
from tests.shop_fixture import populate, train_config


def test_activate_an_older_bundle_and_refuse_bad_ones(engine, run_cli, tmp_path):
    populate(engine)
    old = train(engine, tmp_path, train_config())
    new = train(engine, tmp_path, train_config())
    listing = run_cli("bundles", "list").output.splitlines()
    assert listing[0].startswith(f"* {new.version}") and listing[1].startswith(f"  {old.version}")
    listed = json.loads(run_cli("bundles", "list", "--json").output)
    assert [(b["version"], b["active"]) for b in listed] == [(new.version, 1), (old.version, 0)]
    assert listed[0]["path"] == str(new.path) and "weights" in listed[0]["metrics"]
    run_cli("bundles", "activate", old.version)
    assert load_active(engine).version == old.version
    missing = run_cli("bundles", "activate", "no-such-version", expect_exit=2)
    assert "no-such-version" in missing.output and "recsys bundles list" in missing.output
    (new.path / "item_ids.npy").write_bytes(b"corrupt")
    corrupt = run_cli("bundles", "activate", new.version, expect_exit=2)
    assert "checksum" in corrupt.output
    assert load_active(engine).version == old.version


def test_gc_keeps_the_newest_and_the_active_and_removes_what_killed_runs_left(
    engine, run_cli, tmp_path
):
    populate(engine)
    artifacts = tmp_path / "artifacts"
    oldest, middle, newest = (train(engine, artifacts, train_config()) for _ in range(3))
    run_cli("bundles", "activate", oldest.version)
    bundles = artifacts / "bundles"
    partial = bundles / ".20990101T000000-abcdef.x1y2"  # a run killed while writing files
    partial.mkdir()
    (partial / "item_vectors.npy").write_bytes(b"half")
    unregistered = write_bundle(  # a run killed after the rename, before registering
        bundles, "20990101T000001-abcdef", lambda d: None, {}, catalog_identity(engine)
    )
    elsewhere = write_bundle(bundles, "20990101T000002-abcdef", lambda d: None, {}, "sqlite:///x")
    gc = run_cli("--artifacts-dir", artifacts, "bundles", "gc", "--keep", "1").output
    assert f"removed bundle {middle.version}" in gc
    assert sorted(p.name for p in bundles.iterdir()) == sorted(
        [oldest.version, newest.version, elsewhere.name]  # another catalog's: not ours to judge
    )
    assert not partial.exists() and not unregistered.exists() and not middle.path.exists()
    listing = run_cli("bundles", "list").output
    assert middle.version not in listing and f"* {oldest.version}" in listing
    run_cli("--artifacts-dir", artifacts, "bundles", "gc", "--keep", "0")
    assert load_active(engine).version == oldest.version and oldest.path.is_dir()
    assert not newest.path.exists()


def test_a_bundle_of_the_format_before_is_read_and_one_of_newer_code_is_refused(engine, tmp_path):
    """Code that read only format 5 served a format-6 bundle's feeds without its users'
    recency and read its Chinese titles as whole words; this code reads 5 and 6 (an upgrade
    serves the bundle it finds) and refuses a newer format, saying what wrote it."""
    populate(engine)
    trained = train(engine, tmp_path, train_config())
    manifest_path = trained.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["format_version"] == 6
    for found, refused in ((5, None), (7, "newer code wrote it")):
        manifest_path.write_text(json.dumps({**manifest, "format_version": found}))
        if refused is None:
            assert read_manifest(trained.path)["format_version"] == 5
            assert load_active(engine).version == trained.version
        else:
            with pytest.raises(
                InvalidBundle, match=f"format 7, this code reads 5 and 6; {refused}"
            ):
                read_manifest(trained.path)
