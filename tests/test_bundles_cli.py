"""`recsys bundles list|activate|gc`: roll back to an older bundle; refuse unknown or corrupt
ones; remove old bundles and what killed training runs left, never the active one."""

from __future__ import annotations

import json

from recsys.model.bundle import catalog_identity, load_active, write_bundle
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
