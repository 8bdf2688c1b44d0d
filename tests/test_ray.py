"""The Ray engine on a local Ray instance: the same vectors, models and neighbour tables as the
in-process paths (issue 20). Skipped only when the optional ``ray`` extra is absent."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from recsys.vision import ImageEncoder, ImageEncoderConfig, MethodConfig, TrainConfig

TINY = ImageEncoderConfig(
    method="simclr",
    backbone="small_cnn",
    width=4,
    input_size=12,
    heads=MethodConfig(hidden_dim=32, proj_dim=16, dino_out_dim=64),
    train=TrainConfig(epochs=2, batch_size=8, seed=3),
)
CLI_FLAGS = ("--epochs", "2", "--batch-size", "8", "--input-size", "12", "--device", "cpu")


ray = pytest.importorskip("ray", reason="the optional Ray extra is not installed (.[ray])")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def db_url(tmp_path):
    """SQLite only: the Ray stages do not touch the catalog's backend (and each Ray Train run
    costs tens of seconds)."""
    return f"sqlite:///{tmp_path / 'catalog.db'}"


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_ARTIFACTS_DIR", str(tmp_path / "artifacts"))


@pytest.fixture
def items_csv(tmp_path):
    """40 colour and grayscale PNGs of mixed sizes, listed in items.csv."""
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    lines = ["item_id,image"]
    for i in range(40):
        shape = (20, 16, 3) if i % 2 else (16 + i % 5, 18)
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(
            tmp_path / "img" / f"{i}.png"
        )
        lines.append(f"sku{i},img/{i}.png")
    (tmp_path / "items.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "items.csv"


def test_ray_train_with_one_worker_is_the_in_process_training(items_csv):
    from recsys.engines.ray_cluster import RayResources
    from recsys.engines.ray_train import RayImageEncoder
    from recsys.vision.data import read_items_csv

    _, paths = read_items_csv(items_csv, items_csv.parent)
    local = ImageEncoder(TINY, device="cpu").fit(paths)
    on_ray = RayImageEncoder(TINY, "cpu", resources=RayResources(1, 1)).fit(paths)
    assert on_ray.train_result_.steps == local.train_result_.steps == 10  # 2 x 40 // 8
    np.testing.assert_allclose(on_ray.transform(paths), local.transform(paths), atol=1e-5)


def test_two_workers_train_then_embed_on_ray_as_in_process(run_cli, items_csv, tmp_path):
    model, out = tmp_path / "model", tmp_path / "vectors.npy"
    common = ("--items", items_csv, "--images-root", items_csv.parent)
    trained = run_cli(
        "--ray-address", "local", "train-images", *common, "--out", model, *CLI_FLAGS,
        "--workers", "2", "--cpus-per-worker", "1", "--no-progress",
    ).output  # fmt: skip
    # 2 workers x 8 images a step: an epoch of 40 images is 2 steps, lr doubled
    assert "effective batch 2 x 8 = 16" in trained and "4 steps" in trained
    assert ImageEncoder.load(model).config_.train.lr == pytest.approx(2 * TINY.train.lr)
    (items_csv.parent / "img" / "7.png").write_bytes(b"\x89PNG truncated")  # one upload broke
    run_cli(
        "--ray-address", "local", "embed-images", "--model", model, *common, "--out", out,
        "--workers", "2", "--cpus-per-worker", "1", "--batch-size", "16", "--no-progress",
    )  # fmt: skip
    vectors = np.load(out, allow_pickle=False)
    local = ImageEncoder.load(model, device="cpu")
    local.skip_unreadable = True  # as the command's default
    in_process = local.transform([items_csv.parent / "img" / f"{i}.png" for i in range(40)])
    assert vectors.shape == in_process.shape == (40, 256)  # small_cnn at width 32
    assert np.abs(vectors - in_process).max() <= 1e-5
    assert not vectors[7].any() and (np.abs(np.delete(vectors, 7, axis=0)).sum(axis=1) > 0).all()
    assert (tmp_path / "vectors.ids.txt").read_text().split() == [f"sku{i}" for i in range(40)]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_neighbour_table_on_ray_equals_the_in_process_table(kind):
    from recsys.engines.ray_index import neighbour_table
    from recsys.model import training
    from recsys.model.index import IndexConfig
    from tests.shop_fixture import train_config
    from tests.toy import toy_catalog

    config = replace(train_config(), index=IndexConfig(kind=kind))
    recommender = training._recommender(
        training.fit_in_memory(toy_catalog(), config), config, False
    )
    recommender.compute_neighbours(20, batch=8)  # 32 items: 4 batches, in 2 tasks below
    rows, scores = neighbour_table(recommender, 20, "local", batch=8, tasks=2)
    np.testing.assert_array_equal(rows, recommender.neighbours[0])
    np.testing.assert_array_equal(scores, recommender.neighbours[1])
    assert (rows >= 0).all() and (rows != np.arange(32)[:, None]).all()  # never itself


def test_recsys_train_builds_the_neighbour_table_on_ray(engine, tmp_path):
    from recsys.model.bundle import load_recommender
    from recsys.model.training import train
    from tests.shop_fixture import populate, train_config

    populate(engine)
    local = load_recommender(train(engine, tmp_path / "a", train_config()).path)
    on_ray = load_recommender(
        train(engine, tmp_path / "b", train_config(), ray_address="auto").path
    )
    np.testing.assert_array_equal(on_ray.neighbours[0], local.neighbours[0])
    np.testing.assert_allclose(on_ray.neighbours[1], local.neighbours[1], atol=1e-6)
