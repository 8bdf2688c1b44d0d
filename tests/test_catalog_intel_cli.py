"""`recsys catalog duplicates|outliers|clusters|tag` on an .npy of vectors, on photos, and on
the active bundle."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from recsys.catalog_intel.edits import realistic_edits
from recsys.cli import cli
from recsys.commands.catalog import emit
from tests.test_catalog_intel import blobs, shapes
from tests.test_catalog_verification import products


def recsys(*args, expect_exit: int = 0):
    result = CliRunner().invoke(cli, ["--database-url", "sqlite://", *map(str, args)])
    assert result.exit_code == expect_exit, result.output
    return result


@pytest.fixture
def vectors(tmp_path):
    """Five product families of 60 items, item 300 a re-upload of item 3, 301 an odd one."""
    x, labels = blobs()
    rng = np.random.default_rng(0)
    odd = -5 * x.mean(axis=0) / np.linalg.norm(x.mean(axis=0))  # unlike every family
    x = np.vstack([x, x[3] + 0.001 * rng.normal(size=16), odd])
    path = tmp_path / "vectors.npy"
    np.save(path, x.astype(np.float32))
    ids = [f"sku-{i}" for i in range(len(x))]
    path.with_suffix(".ids.txt").write_text("\n".join(ids) + "\n")
    return path, np.r_[labels, -1, -1]


def test_duplicates_csv_lists_the_reupload_pair(vectors, tmp_path):
    path, _ = vectors
    out = tmp_path / "dups.csv"
    recsys("catalog", "duplicates", "--vectors", path, "--threshold", 0.999, "--out", out,
           "--no-progress")  # fmt: skip
    table = pd.read_csv(out)
    assert table.to_dict("records") == [
        {"set": 0, "item_a": "sku-3", "item_b": "sku-300", "similarity": pytest.approx(1, abs=1e-4)}
    ]


def test_duplicates_without_a_threshold_or_photos_say_how_to_fix_it(vectors):
    path, _ = vectors
    result = recsys("catalog", "duplicates", "--vectors", path, expect_exit=2)
    assert "--threshold" in result.output and "--images" in result.output
    assert "copy_similarities" not in result.output  # the library's words, not the CLI's


def test_too_few_photos_say_so_in_the_words_of_photos(tmp_path):
    """Not "vectors must be an (N, D) array with N >= 2", nor "it has no rows" of a file
    whose columns are right."""
    Image.new("L", (8, 8)).save(tmp_path / "p.png")
    listed = tmp_path / "items.csv"
    listed.write_text("item_id,image\n")
    result = recsys("catalog", "duplicates", "--images", listed, expect_exit=2)
    assert "lists no items: it holds only its header" in result.output
    listed.write_text("item_id,image\na,p.png\n")
    result = recsys("catalog", "duplicates", "--images", listed, expect_exit=2)
    assert "lists 1 photo; pairs need 2" in result.output
    listed.write_text("item_id,image\na,p.png\nb,\n")  # named the images root as unreadable
    result = recsys("catalog", "duplicates", "--images", listed, expect_exit=2)
    assert "line 3 (item 'b') has no image" in result.output
    listed.write_text("item_id,image\na,p.png\nb,p.png\na,p.png\n")  # a pair of a and a
    result = recsys("catalog", "duplicates", "--images", listed, expect_exit=2)
    assert "line 4 names item 'a' again (first on line 2)" in result.output


def test_a_threshold_of_nan_and_an_out_of_no_file_say_so(vectors, tmp_path):
    """--threshold nan found nothing, exit 0 (the service answers 400); --out into /proc
    was a FileNotFoundError traceback; a link given as --out was replaced by a copy."""
    path, _ = vectors
    result = recsys("catalog", "duplicates", "--vectors", path, "--threshold", "nan", expect_exit=2)
    assert "'nan' is not a number" in result.output
    result = recsys("catalog", "outliers", "--vectors", path, "--out", "/proc/x.csv", expect_exit=2)
    assert "cannot write /proc/x.csv" in result.output and "Traceback" not in result.output
    (tmp_path / "real.csv").write_text("keep\n")
    (tmp_path / "link.csv").symlink_to(tmp_path / "real.csv")
    recsys("catalog", "outliers", "--vectors", path, "--out", tmp_path / "link.csv")
    assert (tmp_path / "link.csv").is_symlink()
    assert (tmp_path / "real.csv").read_text().startswith("item_id,score")


def test_an_ids_file_naming_an_item_twice_is_refused(vectors):
    path, _ = vectors
    ids = path.with_suffix(".ids.txt")
    ids.write_text(ids.read_text().replace("sku-7\n", "sku-6\n"))
    result = recsys("catalog", "outliers", "--vectors", path, expect_exit=2)
    assert "names 1 item(s) more than once, e.g. 'sku-6'" in result.output


def test_duplicates_from_photos_calibrate_their_own_threshold(tmp_path):
    images = shapes(300, seed=5)
    copies = realistic_edits(images[:10], seed=6)  # 6% of the items are in a duplicate pair
    rows = []
    for n, pixels in enumerate(np.concatenate([images, copies])):
        name = f"img{n}.png"
        Image.fromarray(pixels).save(tmp_path / name)
        rows.append({"item_id": f"p{n}", "image": name})
    pd.DataFrame(rows).to_csv(tmp_path / "items.csv", index=False)
    out = tmp_path / "dups.json"
    recsys("catalog", "duplicates", "--images", tmp_path / "items.csv", "--out", out)
    doc = json.loads(out.read_text())
    assert doc["calibration"]["threshold"] == doc["threshold"] and doc["score"] == "verified"
    found = {tuple(sorted(s)) for s in doc["sets"]}
    planted = {tuple(sorted((f"p{i}", f"p{300 + i}"))) for i in range(10)}
    assert len(found & planted) >= 7 and len(found - planted) <= 3


def test_duplicates_from_photos_are_verified_so_lookalikes_stay_apart(tmp_path):
    items, lookalikes = products(100, seed=9)
    copies = realistic_edits(items[:20], seed=10)
    rows = []
    for n, pixels in enumerate(np.concatenate([items, lookalikes, copies])):
        Image.fromarray(pixels).save(tmp_path / f"img{n}.png")
        rows.append({"item_id": f"p{n}", "image": f"img{n}.png"})
    pd.DataFrame(rows).to_csv(tmp_path / "items.csv", index=False)
    planted = {(f"p{i}", f"p{200 + i}") for i in range(20)}
    out = tmp_path / "dups.csv"
    recsys("catalog", "duplicates", "--images", tmp_path / "items.csv", "--out", out,
           "--no-progress")  # fmt: skip
    verified = set(pd.read_csv(out)[["item_a", "item_b"]].itertuples(index=False, name=None))
    assert len(verified & planted) >= 10 and len(verified - planted) <= 1
    recsys("catalog", "duplicates", "--images", tmp_path / "items.csv", "--out", out,
           "--no-verify", "--no-progress")  # fmt: skip
    cosine = set(pd.read_csv(out)[["item_a", "item_b"]].itertuples(index=False, name=None))
    # On cosine alone lookalikes pass and fewer copies do.
    assert len(cosine - planted) > len(verified - planted)
    assert len(cosine & planted) < len(verified & planted)


def test_outliers_json_puts_the_odd_item_first(vectors, tmp_path):
    path, _ = vectors
    out = tmp_path / "odd.json"
    recsys("catalog", "outliers", "--vectors", path, "--top", 3, "--out", out, "--no-progress")
    doc = json.loads(out.read_text())
    assert doc["rows"][0]["item_id"] == "sku-301" and doc["rows"][0]["flagged"] is True
    assert len(doc["rows"]) == 3 and doc["k"] == 10


def test_an_outliers_k_past_the_catalog_says_the_k_it_scored_at(vectors):
    path, _ = vectors
    result = recsys("catalog", "outliers", "--vectors", path, "--k", 5000, "--no-progress")
    assert "--k 5000 is more than the 301 other items: scored at k = 301" in result.stderr


def test_clusters_have_one_medoid_each_and_follow_the_families(vectors):
    path, labels = vectors
    # k = 6: the odd item may take a cluster of its own; no cluster mixes two families.
    result = recsys("catalog", "clusters", "--vectors", path, "--k", 6, "--no-progress")
    table = pd.read_csv(pd.io.common.StringIO(result.stdout))
    assert table.groupby("cluster")["medoid"].sum().tolist() == [1] * 6
    family = pd.Series(labels[:300]).groupby(table["cluster"][:300].to_numpy()).nunique()
    assert (family == 1).all()


def test_tag_predicts_every_item_from_two_labels_per_family(vectors, tmp_path):
    path, labels = vectors
    given = [i for c in range(5) for i in np.flatnonzero(labels == c)[:2]]
    pd.DataFrame({"item_id": [f"sku-{i}" for i in given], "label": [f"L{labels[i]}" for i in given]}
                 ).to_csv(tmp_path / "labels.csv", index=False)  # fmt: skip
    for method in ("linear", "propagation"):
        out = tmp_path / f"tags-{method}.csv"
        recsys("catalog", "tag", "--vectors", path, "--labels", tmp_path / "labels.csv",
               "--method", method, "--out", out, "--no-progress")  # fmt: skip
        table = pd.read_csv(out).iloc[:300]
        assert (table["label"] == [f"L{c}" for c in labels[:300]]).mean() > 0.97
        assert table["given"].sum() == 10 and table["confidence"].between(0, 1).all()


def test_vectors_and_ids_must_match(vectors, tmp_path):
    path, _ = vectors
    ids = tmp_path / "ids.csv"
    pd.DataFrame({"item_id": ["a", "b"]}).to_csv(ids, index=False)
    result = recsys("catalog", "outliers", "--vectors", path, "--items", ids, expect_exit=2)
    assert "names 2 items" in result.output


def test_the_active_bundle_is_the_default_source(run_cli, engine, tmp_path):
    """On a trained catalog, without --vectors, the bundle's items are scored."""
    from recsys.model.training import train
    from tests.shop_fixture import populate, train_config

    populate(engine)
    train(engine, tmp_path / "artifacts", train_config(), "cpu")
    result = run_cli("--artifacts-dir", tmp_path / "artifacts", "catalog", "outliers",
                     "--no-progress", "--format", "json")  # fmt: skip
    doc = json.loads(result.stdout)
    bundle_items = {r["item_id"] for r in doc["rows"]}
    assert {"a0", "b0"} <= bundle_items and len(bundle_items) == len(doc["rows"])
    titles = {r["item_id"]: r["title"] for r in doc["rows"]}
    assert titles["a0"] == "Comedy story 0" and titles["b0"] == "Drama story 0"


def test_items_removed_since_the_bundle_are_left_out(run_cli, engine, tmp_path):
    """A catalog manager checking the bundle's listings is not shown items already gone."""
    from recsys.ingest import item_writes
    from recsys.model.training import train
    from tests.shop_fixture import populate, train_config

    populate(engine)
    train(engine, tmp_path / "artifacts", train_config(), "cpu")
    item_writes.delete_item(engine, "a0")
    common = ("--artifacts-dir", tmp_path / "artifacts", "catalog")
    for command, key in (("outliers", "item_id"), ("clusters", "item_id")):
        result = run_cli(*common, command, "--no-progress", "--format", "json")
        listed = {row[key] for row in json.loads(result.stdout)["rows"]}
        assert "a0" not in listed and "b0" in listed, command
        assert "1 of the bundle's" in result.stderr and "removed" in result.stderr
    clusters = run_cli(*common, "clusters", "--k", "2", "--no-progress", "--format", "json")
    named = json.loads(clusters.stdout)["clusters"]  # by what their items share, as the page
    for cluster in named:
        group = cluster["medoid"][0]
        assert cluster["share"] == 1.0 and cluster["attribute"] in ("brand", "genres")
        assert cluster["value"] in (f"{group}-brand", "Comedy" if group == "a" else "Drama")
    result = run_cli(*common, "duplicates", "--threshold", "0", "--no-verify", "--format", "json")
    pairs = json.loads(result.stdout)["rows"]
    assert pairs and all("a0" not in (p["item_a"], p["item_b"]) for p in pairs)


def test_duplicates_leave_out_the_variants_of_one_product(run_cli, engine, tmp_path):
    """A shop listing each size as an item: a3 and its medium size a3-m share a style and
    are no duplicates with --group-by style; the re-listings still are."""
    from recsys.model.training import train
    from tests.shop_fixture import populate, train_config, variants

    populate(engine)
    variants(engine)
    train(engine, tmp_path / "artifacts", train_config(), "cpu")
    common = ("--artifacts-dir", tmp_path / "artifacts", "catalog", "duplicates")
    common += ("--threshold", "0.99", "--no-progress", "--format", "json")

    def pairs(doc):
        return {(row["item_a"], row["item_b"]) for row in doc["rows"]}

    plain = json.loads(run_cli(*common).stdout)
    assert pairs(plain) == {("a1", "a1-again"), ("a3", "a3-m"), ("b2", "b2-again")}
    assert "grouped_pairs" not in plain
    result = run_cli(*common, "--group-by", "style")
    grouped = json.loads(result.stdout)
    assert pairs(grouped) == {("a1", "a1-again"), ("b2", "b2-again")}
    assert grouped["group_by"] == "style" and grouped["grouped_pairs"] == 1
    assert len(grouped["sets"]) == 2
    assert "1 pairs of variants of one product (the same style) left out" in result.stderr
    refused = run_cli(*common, "--group-by", "genres", expect_exit=2)
    assert "--group-by" in refused.output and "brand, style" in refused.output


def test_json_output_writes_a_missing_title_as_null(tmp_path):
    """An item without a title was written "title_a": NaN, which strict JSON parsers refuse
    (the service's endpoint writes null)."""
    table = pd.DataFrame({"item_a": ["a"], "title_a": [np.nan], "similarity": [0.9]})
    emit(table, {"score": "cosine"}, tmp_path / "dups.json", None)
    text = (tmp_path / "dups.json").read_text()
    parsed = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert parsed["rows"] == [{"item_a": "a", "title_a": None, "similarity": 0.9}]


def test_out_is_written_under_home_for_a_tilde_and_nothing_is_left_on_a_failed_write(
    tmp_path, monkeypatch
):
    """A quoted '~/x.json' made a folder named ~ in the working folder; a full disk left the
    part written as .x.json.tmp beside the target."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    table = pd.DataFrame({"item_id": ["a"], "score": [0.5]})
    emit(table, {}, Path("~/out/x.json"), None)
    assert json.loads((tmp_path / "home/out/x.json").read_text())["rows"][0]["item_id"] == "a"
    assert not (tmp_path / "~").exists()

    def full(self, text):
        Path(self).write_bytes(b"par")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(click.ClickException, match="No space left on device"):
        emit(table, {}, tmp_path / "y.csv", None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
