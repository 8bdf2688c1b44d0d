"""`recsys train-images` / `recsys embed-images` from a CSV and from the catalog."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from sqlalchemy.orm import Session

from recsys.catalog import Item

TRAIN_FLAGS = ("--epochs", "1", "--batch-size", "4", "--input-size", "12", "--device", "cpu")


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(tmp_path, monkeypatch):
    """Decoded-image caches go under the artifacts dir: keep them out of the work tree."""
    monkeypatch.setenv("RECSYS_ARTIFACTS_DIR", str(tmp_path / "artifacts"))


def _write_images(root, n: int = 10) -> list:
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    paths = []
    for i in range(n):
        mode = "L" if i % 2 else "RGB"  # mixed: the encoder must cope with both
        shape = (16 + i, 18) if mode == "L" else (20, 16, 3)
        paths.append(root / "img" / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(paths[-1])
    return paths


@pytest.fixture
def items_csv(tmp_path):
    paths = _write_images(tmp_path)
    lines = ["item_id,image"] + [f"sku{i},img/{p.name}" for i, p in enumerate(paths)]
    (tmp_path / "items.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "items.csv"


@pytest.mark.parametrize("method", ["simclr", "byol", "dino"])
def test_train_then_embed_from_a_csv(method, run_cli, items_csv, tmp_path):
    root = str(items_csv.parent)
    model = tmp_path / "model"
    common = ("--items", items_csv, "--images-root", root)
    result = run_cli("train-images", *common, "--method", method, "--out", model, *TRAIN_FLAGS)
    assert "trained" in result.output and (model / "model.pt").is_file()
    out = tmp_path / "vectors.npy"
    run_cli("embed-images", "--model", model, *common, "--out", out, "--device", "cpu")
    vectors = np.load(out, allow_pickle=False)
    assert vectors.shape[0] == 10 and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert (tmp_path / "vectors.ids.txt").read_text().split() == [f"sku{i}" for i in range(10)]


def test_rerun_resumes_and_reports(run_cli, items_csv, tmp_path):
    args = ("train-images", "--items", items_csv, "--out", tmp_path / "m", *TRAIN_FLAGS)
    first = run_cli(*args).output.split("trained")[-1]
    assert (tmp_path / "m" / "checkpoint.pt").is_file()
    again = run_cli(*args).output.split("trained")[-1]
    assert "2 steps" in first and "2 steps" in again  # the finished run is not repeated
    assert "loss nan" not in again


def test_a_damaged_model_or_checkpoint_is_one_line_not_torchs_advice(run_cli, items_csv, tmp_path):
    """A damaged model.pt said to re-run torch.load with weights_only=False, which would run
    what the file holds; a damaged checkpoint stopped every resume without saying why."""
    args = ("train-images", "--items", items_csv, "--out", tmp_path / "m", *TRAIN_FLAGS)
    run_cli(*args)
    (tmp_path / "m" / "checkpoint.pt").write_bytes(b"\x80\x02garbage")
    resumed = run_cli(*args, expect_exit=2)
    assert "checkpoint.pt cannot be read" in resumed.output and "delete it" in resumed.output
    (tmp_path / "m" / "model.pt").write_bytes(bytes(range(256)) * 20)
    embed = ("embed-images", "--model", tmp_path / "m", "--items", items_csv)
    embedded = run_cli(*embed, "--out", tmp_path / "v.npy", expect_exit=2)
    assert "model.pt cannot be read" in embedded.output and "train one again" in embedded.output
    assert "weights_only" not in embedded.output


def test_a_training_that_diverges_stops_and_saves_nothing(run_cli, items_csv, tmp_path):
    """`--lr 1e9` printed "loss nan", exit 0, and saved a model over the one in --out whose
    every vector was NaN; embed-images wrote them as its L2-normalised vectors."""
    model = tmp_path / "m"
    args = ("train-images", "--items", items_csv, "--out", model, *TRAIN_FLAGS)
    run_cli(*args)
    kept = (model / "model.pt").read_bytes()
    (model / "checkpoint.pt").unlink()  # start over, as the resume would refuse a new --lr
    diverged = run_cli(*args, "--epochs", "3", "--lr", "1e9", expect_exit=2).output
    assert re.search(r"image training diverged at step \d of 6 \(epoch \d of 3\)", diverged)
    assert "lower learning rate (--lr) than 1e+09" in diverged and "Traceback" not in diverged
    assert (model / "model.pt").read_bytes() == kept and not (model / "checkpoint.pt").exists()


def test_a_model_giving_nan_vectors_writes_none(run_cli, items_csv, tmp_path):
    import torch

    from recsys.vision import ImageEncoder

    model = tmp_path / "m"
    run_cli("train-images", "--items", items_csv, "--out", model, *TRAIN_FLAGS)
    encoder = ImageEncoder.load(model, device="cpu")
    with torch.no_grad():
        next(encoder.backbone_.parameters()).fill_(float("nan"))
    encoder.save(model)  # as a model of a diverged training was saved before
    out = tmp_path / "v.npy"
    embed = ("embed-images", "--model", model, "--items", items_csv, "--out", out)
    refused = run_cli(*embed, "--device", "cpu", expect_exit=2).output
    assert "vectors that are not finite numbers for 10 of 10 images" in refused
    assert "lower --lr" in refused and not out.exists()


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--lr", "-1", "--lr"),
        ("--device", "foo", "'foo' is not one of auto, cpu, cuda, cuda:N"),
        ("--input-size", "100000", "--input-size"),  # decoded 30 GB a photo: killed
        ("--weights", "ITEMS", "is not a PyTorch checkpoint of tensors"),
    ],
)
def test_image_options_that_cannot_work_are_one_line(
    run_cli, items_csv, tmp_path, option, says, value
):
    """Each was a traceback (torch's ValueError, RuntimeError, UnpicklingError with its
    advice to load with weights_only=False) or an out-of-memory kill."""
    value = str(items_csv) if value == "ITEMS" else value
    args = ("train-images", "--items", items_csv, "--out", tmp_path / "m", "--epochs", "1")
    refused = run_cli(*args, option, value, expect_exit=2)
    assert says in refused.output and "weights_only" not in refused.output
    assert "Traceback" not in refused.output and "images: input" not in refused.output  # no work


def test_views_larger_than_the_input_name_both_options(run_cli, items_csv, tmp_path):
    """`--train-size 32 --input-size 16` said "training views of 32 px are larger than the
    16 px input", naming neither option, after reading the images."""
    args = ("train-images", "--items", items_csv, "--out", tmp_path / "m", "--train-size", "32")
    refused = run_cli(*args, "--input-size", "16", expect_exit=2).output
    assert "Invalid value for '--train-size': 32 is larger than --input-size 16" in refused
    assert "at most 16 px" in refused and "images: input" not in refused  # no work
    ruled = run_cli(*args, "--device", "cpu", expect_exit=2).output  # the rule's 16 px
    assert "32 px (--train-size) are larger than the 16 px input (the size rule's" in ruled


def test_images_that_are_not_where_the_items_say_are_named(run_cli, items_csv, tmp_path):
    """Paths relative to another folder said "no images given; the catalog needs at least 2
    images", naming neither the files nor --images-root."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = ("train-images", "--items", items_csv, "--out", tmp_path / "m", *TRAIN_FLAGS[:4])
    missing = run_cli(*args, "--images-root", elsewhere, expect_exit=2)
    assert "none of the 10 image files looked at exists" in missing.output
    assert str(elsewhere / "img") in missing.output and "--images-root" in missing.output


def test_train_from_the_catalog(engine, run_cli, tmp_path):
    paths = _write_images(tmp_path / "shop", n=6)
    with Session(engine) as session:
        session.add_all(Item(external_id=f"p{i}", image_path=str(p)) for i, p in enumerate(paths))
        session.add(Item(external_id="no-image"))
        session.commit()
    model = tmp_path / "model"
    result = run_cli("train-images", "--out", model, *TRAIN_FLAGS)
    assert "on 6 images" in result.output
    run_cli("embed-images", "--model", model, "--out", tmp_path / "v.npy", "--device", "cpu")
    assert np.load(tmp_path / "v.npy").shape[0] == 6


def test_missing_image_column_is_a_clear_error(run_cli, tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title\na,b\n")
    result = run_cli(
        "train-images", "--items", tmp_path / "items.csv", "--out", tmp_path / "m", expect_exit=2
    )
    assert "item_id column and one of image" in result.output


def test_a_full_disk_leaves_no_part_of_the_vectors(tmp_path, monkeypatch):
    """embed-images on a full disk left its .v.tmpNNNN.npy behind."""
    import errno
    import os

    from recsys.commands import images

    def full(file, *_args, **_kwargs):
        with open(file, "wb") as part:  # what was written before the disk filled
            part.write(b"\x93NUMPY")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(images.np, "save", full)
    with pytest.raises(OSError, match="No space left"):
        images._save_npy(tmp_path / "v.npy", np.zeros(3, dtype=np.float32))
    assert list(tmp_path.iterdir()) == []
