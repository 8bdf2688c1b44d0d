"""`recsys bundles list|activate|gc`: roll back to an older bundle; refuse unknown or corrupt
ones; remove old bundles and what killed training runs left, never the active one."""

from __future__ import annotations

import json
import shutil

import pytest
from sqlalchemy import text

from recsys.catalog.db import catalog_key
from recsys.errors import InvalidBundle
from recsys.model.bundle import load_active, read_manifest, write_bundle
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
        bundles, "20990101T000001-abcdef", lambda d: None, {}, catalog_key(engine.url)
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
    shutil.rmtree(newest.path)  # removed by hand: said as gone, not as another folder's
    gc = run_cli("--artifacts-dir", artifacts, "bundles", "gc", "--keep", "0").output
    assert f"removed bundle {newest.version} from the registry (its folder was gone)" in gc
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


def test_a_catalog_restored_beside_moved_artifacts_finds_its_bundles(
    engine, run_cli, tmp_path, monkeypatch
):
    """The registry records absolute paths: a restore on another host, artifacts copied to
    another folder, answered 503 "not a model bundle" for the old path until the registry
    was edited by hand. A registered bundle is now looked for under the artifacts folder's
    bundles/ by its version."""
    populate(engine)
    old_home, new_home = tmp_path / "host1", tmp_path / "host2"
    old = train(engine, old_home, train_config())
    new = train(engine, old_home, train_config())
    old_home.rename(new_home)
    monkeypatch.setenv("RECSYS_ARTIFACTS_DIR", str(new_home))
    served = load_active(engine)
    assert served.version == new.version
    listing = run_cli("bundles", "list", "--json").output
    assert [b["path"] for b in json.loads(listing)] == [
        str(new_home / "bundles" / v) for v in (new.version, old.version)
    ]
    assert "no bundle this code reads" not in run_cli("bundles", "list").output
    run_cli("bundles", "activate", old.version)
    assert load_active(engine).version == old.version


def test_gc_says_which_folders_it_leaves_on_disk(engine, run_cli, tmp_path):
    """A registered bundle outside the artifacts folder gc was given loses its registry row
    only: gc said "removed bundle" and the folder stayed on disk, for good (no later gc saw
    it)."""
    populate(engine)
    home = tmp_path / "artifacts"
    old = train(engine, home, train_config())
    train(engine, home, train_config())
    gc = run_cli("--artifacts-dir", tmp_path / "other", "bundles", "gc", "--keep", "0").output
    assert f"removed bundle {old.version} from the registry; its folder {old.path}" in gc
    assert "was left on disk" in gc and old.path.is_dir()


def test_gc_removes_nothing_while_the_active_bundle_cannot_be_read(engine, run_cli, tmp_path):
    """The active bundle's folder missing (a restore that left it behind), `gc --keep 0`
    removed every other bundle, the ones a server falls back to; the service then had none."""
    populate(engine)
    artifacts = tmp_path / "artifacts"
    old = train(engine, artifacts, train_config())
    new = train(engine, artifacts, train_config())
    new.path.rename(tmp_path / "elsewhere")
    listing = run_cli("--artifacts-dir", artifacts, "bundles", "list").output
    assert f"* {new.version}" in listing and "no bundle this code reads at" in listing
    stats = run_cli("--artifacts-dir", artifacts, "stats").output
    assert "its folder holds no bundle this code can read" in stats
    refused = run_cli("--artifacts-dir", artifacts, "bundles", "gc", "--keep", "0", expect_exit=2)
    assert f"the active bundle {new.version} cannot be read" in refused.output
    assert "recsys bundles activate VERSION" in refused.output
    assert read_manifest(old.path)["version"] == old.version  # still there to fall back to


def test_a_bundle_the_registry_lacks_is_registered_after_its_files_are_checked(
    engine, run_cli, tmp_path
):
    """A catalog restored from a backup older than a bundle: the bundle's folder was on disk
    but `bundles activate` said "no bundle in the registry", and nothing could add it. Only
    a folder in the artifacts folder's bundles/ (where gc removes old bundles: registered
    from elsewhere, a backup copy was deleted) of this catalog is taken."""
    populate(engine)
    artifacts = tmp_path / "artifacts"
    old = train(engine, artifacts, train_config())
    new = train(engine, artifacts, train_config())
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM model_bundles WHERE version = :v"), {"v": new.version})
    run_cli("bundles", "activate", old.version)
    run_cli("bundles", "activate", new.version, expect_exit=2)
    saved = tmp_path / "saved"
    shutil.copytree(new.path, saved)
    register = ("--artifacts-dir", artifacts, "bundles", "register")
    elsewhere = run_cli(*register, saved, expect_exit=2).output
    assert f"copy it to {new.path} first" in elsewhere
    (new.path / "item_ids.npy").write_bytes(b"corrupt")
    assert "checksum" in run_cli(*register, new.path, expect_exit=2).output
    assert new.version not in run_cli("bundles", "list").output
    shutil.rmtree(new.path)
    shutil.copytree(saved, new.path)
    done = run_cli(*register, new.path, "--activate").output
    assert f"registered bundle {new.version} (active)" in done
    assert load_active(engine).version == new.version
    listing = run_cli("bundles", "list").output.splitlines()
    assert listing[0].startswith(f"* {new.version}")  # the newest registered
    assert "validation recall@10" in listing[0]  # its manifest's figures (it had none)
    assert "registered already" in run_cli(*register, new.path, expect_exit=2).output


def test_a_bundle_of_another_catalog_is_not_registered(engine, run_cli, tmp_path):
    populate(engine)
    artifacts = tmp_path / "artifacts"
    trained = train(engine, artifacts, train_config())

    def refused() -> str:
        register = ("--artifacts-dir", artifacts, "bundles", "register", trained.path)
        return run_cli(*register, expect_exit=2).output

    with engine.begin() as connection:
        connection.execute(text("DELETE FROM model_bundles"))
        connection.execute(text("UPDATE items SET external_id = 'other-' || external_id"))
    assert "only 0% of its items are in this catalog" in refused()
    # two shops made by the same tools number their items alike: the catalog's id tells
    with engine.begin() as connection:
        connection.execute(text("UPDATE items SET external_id = substr(external_id, 7)"))
        connection.execute(text("UPDATE catalog_state SET catalog_id = 'another' WHERE id = 1"))
    assert "was trained on another catalog (catalog id " in refused()
    assert read_manifest(trained.path)["catalog_id"] not in (None, "another")
    # a bundle from before catalog ids: its items' titles tell (the ids look alike)
    manifest = json.loads((trained.path / "manifest.json").read_text())
    del manifest["catalog_id"]
    (trained.path / "manifest.json").write_text(json.dumps(manifest))
    with engine.begin() as connection:
        connection.execute(text("UPDATE items SET title = 'Other ' || title"))
    assert "only 0% of its items are in this catalog (by id and title)" in refused()


def test_a_bundle_file_the_service_cannot_read_is_a_bundle_refused(engine, tmp_path, monkeypatch):
    """A bundle restored with the wrong owner or mode: a PermissionError from its files was
    no InvalidBundle, so no worker fell back to an earlier bundle."""
    populate(engine)
    trained = train(engine, tmp_path, train_config())

    def unreadable(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("recsys.model.bundle.sha256", unreadable)
    with pytest.raises(InvalidBundle, match=r"cannot be read .*PermissionError.*read access"):
        read_manifest(trained.path)


def test_stats_counts_the_events_stored_since_the_active_bundles_data(engine, run_cli, tmp_path):
    """A shop whose log grew from 50 events to 5,000 in a day had no sign of it: the retrain
    signal follows the live items alone. `recsys stats` says how many events were stored
    since the active bundle's data was read, beside the number it was trained on."""
    populate(engine)
    artifacts = tmp_path / "artifacts"
    trained = train(engine, artifacts, train_config())
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,event\nnew-1,a1,view\nnew-1,a2,view\nu2,b3,purchase\n")
    run_cli("ingest", "interactions", events)
    stats = json.loads(run_cli("--artifacts-dir", artifacts, "stats", "--json").output)
    since = stats["active_bundle"]["since"]
    assert since["events"] == 3 and since["users"] == 2
    assert since["trained_on"] == read_manifest(trained.path)["counts"]["interactions"] > 0
    said = run_cli("--artifacts-dir", artifacts, "stats").output
    assert f"3 events of 2 users stored, {3 / since['trained_on']:.1%} of the" in said
