"""`recsys evaluate` end to end: a MovieLens subset in the catalog -> report files, the fused
model ahead of popularity, same seed same numbers, the summary recorded with the active
bundle; Fashion-MNIST images with labels -> the image-encoder section."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from threadpoolctl import threadpool_limits

from recsys.catalog import connect
from recsys.catalog.models import Item, ModelBundle
from recsys.cli import cli
from recsys.evaluation.contenders import ItemContent, PeerConfig, build_contenders
from recsys.evaluation.document import Bold, Document, to_html, to_markdown
from recsys.model.bundle import read_manifest
from recsys.model.data import CatalogData
from recsys.model.training import TrainConfig

# Users of the MovieLens subset: enough for the fused model to clearly beat popularity.
SUBSET_USERS = 200
PLOTS = ("headline", "recall_at_k", "ndcg_at_k", "segments", "item_map", "similar_items")


def recsys(url: str, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--database-url", url, *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def movielens_db(tmp_path_factory):
    """A SQLite catalog with all MovieLens movies and the ratings of a seeded user sample."""
    root = tmp_path_factory.mktemp("movielens")
    url = f"sqlite:///{root / 'catalog.db'}"
    recsys(url, "db", "upgrade")
    recsys(url, "datasets", "prepare", "movielens", "--out", root)
    ratings = pd.read_csv(root / "interactions.csv")
    users = ratings["user_id"].drop_duplicates().sample(SUBSET_USERS, random_state=0)
    ratings[ratings["user_id"].isin(users)].to_csv(root / "subset.csv", index=False)
    recsys(url, "ingest", "items", root / "items.csv", "-q")
    recsys(url, "ingest", "interactions", root / "subset.csv", "-q")
    return root / "catalog.db"


def copy_catalog(source, tmp_path) -> str:
    shutil.copy(source, tmp_path / "catalog.db")
    return f"sqlite:///{tmp_path / 'catalog.db'}"


def only_report(directory):
    (report,) = [p for p in directory.iterdir() if not p.name.startswith(".")]
    return report


@pytest.mark.slow
def test_evaluate_writes_the_report_and_fused_beats_popularity(movielens_db, tmp_path):
    url = f"sqlite:///{movielens_db}"
    first = recsys(url, "evaluate", "--k", "5,10,20", "--out", tmp_path / "a", "--quiet")
    report = only_report(tmp_path / "a")
    for name in ("report.md", "report.html", "metrics.json"):
        assert (report / name).stat().st_size > 0, name
    for name in PLOTS:
        assert (report / "plots" / f"{name}.png").stat().st_size > 1000, name
    metrics = json.loads((report / "metrics.json").read_text())
    results = metrics["contenders"]
    assert list(results) == [
        "popularity", "item-kNN", "ALS", "BPR", "EASE", "RP3beta",
        "TF-IDF profile", "content (tabular)", "fused",
    ]  # fmt: skip
    fused, popularity = results["fused"], results["popularity"]
    assert fused["overall"]["recall@10"] > popularity["overall"]["recall@10"]
    # popularity gives every new item one score: no cold-item figures, where fused has some
    assert popularity["cold_items"]["tied"] and "recall@10" not in popularity["cold_items"]
    assert fused["cold_items"]["recall@10"] > 0
    assert metrics["split"]["name"] == "temporal" and metrics["data"]["users"] == SUBSET_USERS
    markdown = (report / "report.md").read_text()
    assert "## At a glance" in markdown and "(plots/headline.png)" in markdown
    assert "recsys evaluate --split temporal" in markdown
    task = metrics["task"]  # MovieLens rates an item once: no held-out pair was seen before
    assert task["heldout_pairs"] > 0 and task["heldout_repeats"] == 0
    assert f"Held-out (user, item) pairs scored: {task['heldout_pairs']:,}. Left out: 0" in markdown
    assert 'src="data:image/png;base64,' in (report / "report.html").read_text()
    assert "fused" in first and "report:" in first
    pages = metrics["item_to_item"]
    assert list(pages["rankers"]) == ["fused also", "fused similar", "ALS item-item"]
    assert pages["pairs"] > 50
    # co-viewing finds where shoppers go next far better than "looks and reads alike"
    rates = {name: row["hit_rate@10"] for name, row in pages["rankers"].items()}
    assert rates["fused also"] > rates["fused similar"]
    assert "## Item-to-item: next-item hit rate@10" in markdown
    assert "next-item hit_rate@10" in first
    # the fused model against its best collaborative and best content part, paired per user
    compared = metrics["against_parts"]
    warm, cold = compared["warm"], compared["cold"]
    best_warm = max(("popularity", "item-kNN", "ALS", "BPR", "EASE", "RP3beta"),
                    key=lambda n: results[n]["overall"]["recall@10"])  # fmt: skip
    assert warm["part"] == best_warm and cold["part"] in ("TF-IDF profile", "content (tabular)")
    assert warm["fused"] == pytest.approx(fused["overall"]["recall@10"])
    assert cold["other"] == pytest.approx(results[cold["part"]]["cold_items"]["recall@10"])
    assert warm["difference"] == pytest.approx(warm["fused"] - warm["other"])
    assert warm["users"] == metrics["task"]["evaluated_users"] and warm["stderr"] > 0
    assert "### The fused model against its parts" in markdown
    assert f"fused against {best_warm}: recall@10 {warm['difference']:+.4f}" in first

    recsys(url, "evaluate", "--k", "5,10,20", "--out", tmp_path / "b", "--quiet")
    again = only_report(tmp_path / "b")
    assert (again / "metrics.json").read_text() == (report / "metrics.json").read_text()


@pytest.mark.slow
def test_a_catalog_with_one_photo_gets_its_report(movielens_db, tmp_path):
    """One item given a photo (a PUT through the API) ended every evaluation in a traceback:
    the items without one reached the similar-items plot as NaN, Image.open(nan)."""
    url = copy_catalog(movielens_db, tmp_path)
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    with Session(connect(url)) as session, session.begin():
        session.execute(
            update(Item).where(Item.external_id == "1").values(image_path=str(tmp_path / "red.png"))
        )
    out = tmp_path / "r"
    recsys(url, "evaluate", "--k", "10", "--users", "40", "--image-epochs", "1", "-q", "--out", out)
    assert (only_report(out) / "plots" / "similar_items.png").exists()


def test_other_splits_and_a_user_sample(movielens_db, tmp_path):
    url = f"sqlite:///{movielens_db}"
    args = ("--k", "10", "--users", "80", "--quiet")
    recsys(url, "evaluate", "--split", "random", "--seed", "3", "--out", tmp_path / "r", *args)
    random_metrics = json.loads((only_report(tmp_path / "r") / "metrics.json").read_text())
    assert random_metrics["split"] | {"name": "random", "seed": 3} == random_metrics["split"]
    assert random_metrics["data"]["users"] == 80
    # the sample trains the contenders too: at a glance and in the setup, not only the log
    markdown = (only_report(tmp_path / "r") / "report.md").read_text()
    glance, setup = markdown.split("## Data and split")
    said = "every contender was trained on these users' events only**, so the figures are below"
    assert said in glance.split("## At a glance")[1] and said in setup
    # bold marks the best figures only; the fused row is marked in words
    assert "| fused (this product) |" in glance and "| **fused** |" not in glance
    # the weights are chosen on the latest events by time, not on a random slice: said
    weights = "block weights are chosen as `recsys train` chooses them on dated events"
    assert random_metrics["split"]["validation_slice"] == "temporal" and weights in setup
    recsys(url, "evaluate", "--split", "time-cutoff", "--out", tmp_path / "t", *args)
    cutoff = json.loads((only_report(tmp_path / "t") / "metrics.json").read_text())["split"]
    assert cutoff["name"] == "time-cutoff" and cutoff["cutoff"]
    assert weights not in (only_report(tmp_path / "t") / "report.md").read_text()


@pytest.mark.slow
def test_evaluation_is_recorded_with_the_active_bundle(movielens_db, tmp_path):
    url = copy_catalog(movielens_db, tmp_path)
    recsys(url, "--artifacts-dir", tmp_path / "artifacts", "train", "--quiet")
    output = recsys(url, "evaluate", "--k", "10", "--users", "80", "--out", tmp_path / "r")
    assert "recorded with bundle" in output
    engine = connect(url)
    with Session(engine) as session:
        bundle = session.scalars(select(ModelBundle).where(ModelBundle.is_active)).one()
    engine.dispose()
    evaluation = bundle.metrics["evaluation"]
    assert evaluation["report"] == str(only_report(tmp_path / "r").resolve())
    assert evaluation["metrics"]["recall@10"] > 0 and "cold_recall@10" in evaluation["metrics"]
    assert evaluation["user_sample"] == 80 and 0 < evaluation["users"] <= 80  # a sample's
    assert "validation_recall@10" in bundle.metrics  # training's own metrics are kept
    on_disk = json.loads((tmp_path / bundle.path / "evaluation.json").read_text())
    assert on_disk == evaluation
    read_manifest(bundle.path, verify=True)  # the checksummed files are untouched


@pytest.mark.slow
def test_a_sample_keeps_a_full_record_and_a_training_mid_run_gets_none(
    movielens_db, tmp_path, monkeypatch, caplog
):
    """`--users 20` replaced the record of a run on all users, and a `recsys train` that
    finished mid-evaluation got the result instead of the bundle whose data was read."""
    from recsys.evaluation import EvaluationConfig, evaluate, run
    from recsys.evaluation.registry import record_with_bundle
    from recsys.model.bundle import activate_bundle

    url = copy_catalog(movielens_db, tmp_path)
    recsys(url, "--artifacts-dir", tmp_path / "artifacts", "train", "--quiet")
    engine = connect(url)
    with Session(engine) as session, session.begin():
        trained = session.scalars(select(ModelBundle).where(ModelBundle.is_active)).one()
        version, path = trained.version, trained.path
        session.add(ModelBundle(version="later", path=str(tmp_path / "later"), metrics={}))
    scored = run._evaluate

    def training_finishes(*args, **kwargs):
        activate_bundle(engine, "later")
        return scored(*args, **kwargs)

    monkeypatch.setattr(run, "_evaluate", training_finishes)
    result = evaluate(engine, tmp_path / "r", EvaluationConfig(ks=(10,), users=30))
    monkeypatch.undo()
    assert result.bundle == version

    def recorded(name: str) -> dict | None:
        with Session(engine) as session:
            row = session.scalars(select(ModelBundle).where(ModelBundle.version == name)).one()
            return row.metrics.get("evaluation")

    assert recorded(version)["user_sample"] == 30 and recorded("later") is None
    full = {**result.metrics, "data": {**result.metrics["data"], "user_sample": None}}
    assert record_with_bundle(engine, version, full, result.path).bundle == version  # all users
    activate_bundle(engine, version)
    output = recsys(url, "evaluate", "--k", "10", "--users", "20", "--out", tmp_path / "s")
    assert not any(line.startswith("recorded with bundle") for line in output.splitlines())
    assert f"not recorded with bundle {version}: it keeps its evaluation on all users" in output
    assert recorded(version)["user_sample"] is None
    on_disk = json.loads((tmp_path / path / "evaluation.json").read_text())
    assert on_disk["user_sample"] is None
    engine.dispose()


@pytest.mark.slow
def test_image_encoder_section_from_fashion_mnist_labels(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    data = tmp_path / "fmnist"
    recsys(url, "db", "upgrade")
    recsys(url, "datasets", "prepare", "fashion-mnist", "--out", data, "--limit", "140", "-q")
    recsys(url, "ingest", "items", data / "items.csv", "--images-root", data, "-q")
    output = recsys(
        url, "evaluate", "--labels", data / "labels.csv", "--image-epochs", "1",
        "--out", tmp_path / "r", "--quiet",
    )  # fmt: skip
    assert "raw pixels" in output
    report = only_report(tmp_path / "r")
    images = json.loads((report / "metrics.json").read_text())["images"]
    assert (images["queries"], images["gallery"]) == (20, 120)
    for vectors in ("image vectors", "raw pixels"):
        assert 0.0 <= images[vectors]["knn_accuracy"] <= 1.0
        assert 0.0 <= images[vectors]["precision@10"] <= 1.0
    markdown = (report / "report.md").read_text()
    assert "## Image encoder" in markdown and "coloured by label" in markdown
    assert (report / "plots" / "similar_items.png").exists()


def test_evaluate_refuses_an_empty_catalog(run_cli, engine, tmp_path):
    result = run_cli("evaluate", "--out", tmp_path, expect_exit=2)
    assert "no items" in result.output


def test_cutoff_needs_the_time_cutoff_split(run_cli, engine, tmp_path):
    result = run_cli("evaluate", "--cutoff", "2015-01-01", expect_exit=2)
    assert "--split time-cutoff" in result.output


def test_a_cutoff_outside_the_events_says_where_they_are(run_cli, engine, tmp_path):
    """Not "use a larger --holdout", which a cutoff split does not read."""
    from tests.shop_fixture import populate

    populate(engine)
    for cutoff, empty in (("2030-01-01", "held-out"), ("2000-01-01", "training")):
        args = ("evaluate", "--split", "time-cutoff", "--cutoff", cutoff, "--out", tmp_path)
        result = run_cli(*args, expect_exit=2)
        assert f"leaves no {empty} interactions: the events run from 2024" in result.output


def test_contenders_giving_new_items_one_score_have_no_cold_item_figures(run_cli, engine, tmp_path):
    """Popularity (like every collaborative contender) gives each new item the same score:
    its cold-item recall was that of the tie order, printed to 4 places (MovieLens: 0.0049
    for all six, 0.0209 by column order). It is n/a now; content contenders keep theirs."""
    from tests.shop_fixture import populate

    populate(engine)
    printed = run_cli("evaluate", "--k", "5,10", "--out", tmp_path / "r", "-q").output
    report = only_report(tmp_path / "r")
    metrics = json.loads((report / "metrics.json").read_text())  # valid JSON: no NaN
    results = metrics["contenders"]
    assert metrics["task"]["users_holding_cold_items"] > 0
    popularity, content = results["popularity"]["cold_items"], results["TF-IDF profile"]
    assert popularity["tied"] and "recall@10" not in popularity and popularity["users"] > 0
    assert isinstance(content["cold_items"]["recall@10"], float)
    assert not content["cold_items"].get("tied") and not results["fused"]["cold_items"].get("tied")
    assert metrics["against_parts"]["cold"]["part"] in ("TF-IDF profile", "content (tabular)")
    lines = {line.split()[0]: line.split() for line in printed.splitlines() if line}
    assert lines["popularity"][-1] == "n/a" and lines["fused"][-1] != "n/a"
    markdown = (report / "report.md").read_text()
    assert "| popularity | n/a | n/a |" in markdown  # cold-item ranking at each k
    assert "its order among them is a tie-break, not a ranking" in markdown
    assert (report / "plots" / "headline.png").stat().st_size > 1000
    # the toy's handful of users: the report leads with it, as the CLI does (it said nothing)
    users = metrics["task"]["evaluated_users"]
    glance = markdown.split("## At a glance")[1].split("##")[0]
    assert f"**Warning**: only {users} users hold events out" in glance


def test_markdown_and_html_say_the_same_thing(tmp_path):
    doc = Document("Title")
    doc.heading("Section")
    doc.paragraph("the **best** `model`")
    doc.table(["model", "recall"], [["a", Bold("0.5")], ["b <x>", "0.25"]])
    markdown, html = to_markdown(doc, tmp_path), to_html(doc)
    assert "| model | recall |\n| --- | ---: |\n| a | **0.5** |" in markdown
    assert "<p>the <b>best</b> <code>model</code></p>" in html
    assert "<td><b>0.5</b></td>" in html and "b &lt;x&gt;" in html


class FakeImageEncoder:
    """Deterministic vectors from the path's digits (no files read), counting its fits."""

    fits = 0

    def fit(self, paths):
        FakeImageEncoder.fits += 1
        return self

    def transform(self, paths):
        digits = np.array([int(p[-5]) for p in paths])
        return np.eye(10, dtype=np.float32)[digits] + 0.01


def test_catalogs_with_images_add_an_image_contender_and_share_its_vectors():
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(20)],
            "title": None,
            "image_path": [f"/img/{i % 10}.png" if i < 16 else None for i in range(20)],
            "in_stock": True,
        }
    )
    rng = np.random.default_rng(0)
    interactions = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.integers(0, 8, size=80)],
            "item_id": [f"i{i}" for i in rng.integers(0, 20, size=80)],
            "event": "view",
            "weight": 1.0,
            "timestamp": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(80), unit="h"),
        }
    )
    data = CatalogData(items, {}, interactions)
    content = ItemContent(image_encoder_factory=FakeImageEncoder)
    config = TrainConfig(validation_share=0.0)
    contenders = build_contenders(data, PeerConfig(factors=4), content, config)
    names = [c.name for c in contenders]
    peers = ["popularity", "item-kNN", "ALS", "BPR", "EASE", "RP3beta"]
    assert names == [*peers, "content (image)", "fused"]
    for contender in contenders:
        with threadpool_limits(1, "blas"):
            scores = contender.fit(data).scores(np.array(["u1", "u2", "nobody"]))
        assert scores.shape == (3, 20)
        assert scores[2].any() == (contender.name == "popularity")  # unknown users: 0
    assert "image" in contenders[-1].model_.layout_.dims
    assert FakeImageEncoder.fits == 1  # the fused model reused the shared vectors


def test_users_and_all_users_exclude_each_other(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    result = CliRunner().invoke(
        cli, ["--database-url", url, "evaluate", "--users", "5", "--all-users"]
    )
    assert result.exit_code == 2 and "--all-users" in result.output


def test_at_a_glance_calls_level_what_the_comparison_table_calls_level():
    """fused 0.0210 by TF-IDF's 0.0213 was "not the best" at a glance and "level" in the
    comparison table and the CLI (within 0.002)."""
    from recsys.evaluation.report import _verdict

    def row(warm, cold):
        return {"overall": {"recall@10": warm}, "cold_items": {"recall@10": cold}}

    results = {
        "TF-IDF profile": row(0.0213, 0.1),
        "EASE": row(0.0100, 0.2),
        "fused": row(0.0210, 0.15),
    }
    said = _verdict(results, 10)
    assert "recall@10 0.0210, level with the best (within 0.002) (best peer: TF-IDF" in said
    assert "cold-item recall@10 0.1500, **not** the best (best peer: EASE 0.2000)" in said


def test_the_curves_legend_stands_beside_the_lines(tmp_path, monkeypatch):
    """The legend of recall_at_k.png covered the fused model's line on MovieLens."""
    from recsys.evaluation import plots

    saved = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: saved.append(figure) or path)
    ks = (5, 10, 20, 50)
    results = {
        name: {"overall": {f"recall@{k}": scale * k / 50 for k in ks}}
        for name, scale in (("popularity", 0.2), ("EASE", 0.5), ("fused", 0.45))
    }
    plots.curves(results, ks, "recall", tmp_path / "recall_at_k.png")
    (figure,) = saved
    figure.canvas.draw()
    (axes,) = figure.axes
    (legend,) = figure.legends
    box, lines = legend.get_window_extent(), axes.get_window_extent()
    assert axes.get_legend() is None and box.x0 >= lines.x1  # right of the plot, not on it


def test_evaluate_scores_the_model_train_builds_with_the_same_options(run_cli, engine, tmp_path):
    """evaluate had none of train's model options: its fused contender was always the
    default config's, whatever a bundle was trained with."""
    from tests.shop_fixture import populate

    populate(engine)
    options = ("--factors", "2", "--iterations", "1", "--event-weight", "purchase=5")
    run_cli("evaluate", "--k", "5,10", "--out", tmp_path / "default", "-q")
    run_cli("evaluate", "--k", "5,10", "--out", tmp_path / "tuned", "-q", *options)
    default, tuned = (
        json.loads((only_report(tmp_path / name) / "metrics.json").read_text())
        for name in ("default", "tuned")
    )
    cf = tuned["config"]["fused"]["cf"]
    assert (cf["factors"], cf["iterations"], cf["event_weights"]) == (2, 1, {"purchase": 5.0})
    assert default["config"]["fused"]["cf"]["factors"] == 32
    fused = [m["contenders"]["fused"]["overall"] for m in (default, tuned)]
    assert fused[0] != fused[1]
    # the peers keep their own settings
    assert default["contenders"]["ALS"] == tuned["contenders"]["ALS"]
    markdown = (only_report(tmp_path / "tuned") / "report.md").read_text()
    assert "--factors 2 --iterations 1 --event-weight purchase=5.0" in markdown


def test_figures_are_recorded_only_with_a_bundle_trained_with_the_evaluated_config(
    run_cli, engine, tmp_path
):
    """`train --factors 8 --iterations 3`, then `evaluate`: "recorded with bundle V" while
    metrics.json said factors 32, iterations 15."""
    from tests.shop_fixture import populate

    populate(engine)
    options = ("--factors", "8", "--iterations", "3")
    art = ("--artifacts-dir", tmp_path / "art")
    version = json.loads(run_cli(*art, "train", "-q", "--json", *options).stdout)["version"]
    default = run_cli(*art, "evaluate", "--k", "5,10", "--out", tmp_path / "d", "-q").output
    said = (  # --factors given pins the count; not given, the weights stage may try 64
        f"not recorded with bundle {version}: it was trained with cf.factors 8, "
        "cf.iterations 3, grid.factors [] (this evaluation: 32, 15, [64])"
    )
    assert said in default and "recorded with bundle" not in default.replace(said, "")
    with Session(engine) as session:
        bundle = session.scalars(select(ModelBundle).where(ModelBundle.is_active)).one()
    assert "evaluation" not in bundle.metrics
    same = run_cli(*art, "evaluate", "--k", "5,10", "--out", tmp_path / "s", "-q", *options)
    assert f"recorded with bundle {version}" in same.output
    with Session(engine) as session:
        bundle = session.scalars(select(ModelBundle).where(ModelBundle.is_active)).one()
    recorded = bundle.metrics["evaluation"]["config"]["cf"]
    assert (recorded["factors"], recorded["iterations"]) == (8, 3)
    on_disk = json.loads((Path(bundle.path) / "evaluation.json").read_text())
    assert on_disk == bundle.metrics["evaluation"]


def test_users_past_the_catalogs_users_are_no_sample(run_cli, engine, tmp_path):
    """`--users 100000` on 671 users said "Restricted to a seeded sample of 100,000 users",
    and the registry took the run for a sample's."""
    from tests.shop_fixture import populate

    populate(engine)
    run_cli("evaluate", "--k", "5,10", "--users", "100000", "--out", tmp_path / "r", "-q")
    report = only_report(tmp_path / "r")
    assert json.loads((report / "metrics.json").read_text())["data"]["user_sample"] is None
    assert "seeded sample" not in (report / "report.md").read_text()
