"""The size rule: input and view sizes follow the images and the device; colour is kept."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from recsys.errors import InvalidInput
from recsys.vision import ImageEncoder, ImageEncoderConfig, MethodConfig, TrainConfig
from recsys.vision.recipe import (
    backbone_for,
    input_size_for,
    survey_images,
    view_size_for,
    width_for,
)
from recsys.vision.train import precision_for


def _colour_files(folder, n: int = 12, side: int = 96) -> list:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"{i}.jpg")
        pixels = rng.integers(0, 256, size=(side, side + 8 * (i % 3), 3), dtype=np.uint8)
        Image.fromarray(pixels).save(paths[-1])
    return paths


def _tiny(**fields) -> ImageEncoderConfig:
    heads = MethodConfig(hidden_dim=16, proj_dim=8)
    train = TrainConfig(epochs=1, batch_size=4)
    return ImageEncoderConfig(backbone="small_cnn", width=4, heads=heads, train=train, **fields)


@pytest.mark.parametrize(
    ("side", "device", "expected"),
    [(28, "cpu", (28, 20)), (96, "cpu", (64, 44)), (800, "cpu", (64, 44)),
     (96, "cuda", (96, 68)), (800, "cuda", (224, 156)), (10, "cpu", (16, 12))],
)  # fmt: skip
def test_input_size_is_native_for_small_images_and_capped_by_the_device(side, device, expected):
    size = input_size_for(side, device)
    assert (size, view_size_for(size, "small_cnn")) == expected


@pytest.mark.parametrize(
    ("input_size", "device", "backbone", "width"),
    [(28, "cuda", "small_cnn", 64), (72, "cuda", "resnet18", 64), (224, "cpu", "small_cnn", 32)],
)
def test_backbone_and_width_follow_the_input_size_and_device(input_size, device, backbone, width):
    # Tiny images (Fashion-MNIST) train a wide small CNN on a GPU, photos a ResNet-18.
    assert backbone_for(input_size, device) == backbone
    assert width_for(device) == width


def test_cpu_defaults_resolve_to_small_cnn_of_width_32():
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    cfg = ImageEncoder(device="cpu").resolved_config(images)
    assert (cfg.backbone, cfg.width) == ("small_cnn", 32)


def test_a_vit_trains_at_its_input_size():
    assert view_size_for(64, "vit_tiny") == 64


def test_survey_reads_sizes_and_colour_from_files_and_arrays(tmp_path):
    survey = survey_images(_colour_files(tmp_path))
    assert (survey.side, survey.channels) == (96, 3)
    gray = np.zeros((5, 28, 28), np.uint8)
    assert (survey_images(gray).side, survey_images(gray).channels) == (28, 1)
    rgb = np.zeros((5, 40, 50, 3), np.uint8)
    assert (survey_images(rgb).side, survey_images(rgb).channels) == (40, 3)


def test_a_catalog_of_96px_colour_photos_is_not_trained_at_28px(tmp_path):
    enc = ImageEncoder(_tiny(), device="cpu").fit(_colour_files(tmp_path / "img"))
    cfg = enc.config_
    assert (cfg.input_size, cfg.train_size, cfg.channels) == (64, 44, 3)
    assert enc.backbone_.features[0].in_channels == 3  # colour reaches the network
    enc.save(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert (saved["input_size"], saved["train_size"], saved["channels"]) == (64, 44, 3)
    assert ImageEncoder.load(tmp_path / "model", device="cpu").config_.input_size == 64


def test_sizes_given_in_the_config_win(tmp_path):
    cfg = ImageEncoder(_tiny(input_size=32), device="cpu").resolved_config(_colour_files(tmp_path))
    assert (cfg.input_size, cfg.train_size) == (32, 24)


def test_views_larger_than_the_input_are_refused(tmp_path):
    files = _colour_files(tmp_path)  # 96 px: the rule picks 64 px on a CPU
    given = r"40 px \(--train-size\) are larger than the 16 px input \(--input-size\)"
    with pytest.raises(InvalidInput, match=given):
        ImageEncoder(_tiny(input_size=16, train_size=40), device="cpu").resolved_config(files)
    ruled = r"80 px \(--train-size\) are larger than the 64 px input \(the size rule's"
    with pytest.raises(InvalidInput, match=ruled):
        ImageEncoder(_tiny(train_size=80), device="cpu").resolved_config(files)


def test_the_cli_prints_the_chosen_sizes(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    paths = _colour_files(tmp_path / "img", n=6)
    lines = ["item_id,image"] + [f"sku{i},img/{p.name}" for i, p in enumerate(paths)]
    (tmp_path / "items.csv").write_text("\n".join(lines) + "\n")
    common = ("--items", tmp_path / "items.csv", "--device", "cpu", "--no-progress")
    flags = ("--epochs", "1", "--batch-size", "4")
    out = run_cli("train-images", *common, "--out", tmp_path / "m", *flags).output
    assert "6 colour images: input 64 px, training views 44 px" in out
    out = run_cli("embed-images", *common, "--model", tmp_path / "m", "--out", tmp_path / "v.npy")
    assert "embedding 6 images at 64 px" in out.output
    assert any((tmp_path / "artifacts" / "image-cache").glob("images-64px-3ch-*.npy"))


def test_a_broken_photo_is_left_out_unless_asked_to_stop(run_cli, tmp_path, monkeypatch, caplog):
    """As `recsys train` does: one truncated upload does not stop a catalog's images."""
    monkeypatch.setenv("RECSYS_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    paths = _colour_files(tmp_path / "img", n=6, side=24)
    paths[2].write_bytes(b"\xff\xd8 truncated")
    lines = ["item_id,image"] + [f"sku{i},img/{p.name}" for i, p in enumerate(paths)]
    (tmp_path / "items.csv").write_text("\n".join(lines) + "\n")
    common = ("--items", tmp_path / "items.csv", "--device", "cpu", "--no-progress")
    flags = ("--epochs", "1", "--batch-size", "4")
    stopped = run_cli("train-images", *common, "--out", tmp_path / "m", *flags,
                      "--stop-on-unreadable", expect_exit=2)  # fmt: skip
    assert "cannot read image" in stopped.output and "2.jpg" in stopped.output
    run_cli("train-images", *common, "--out", tmp_path / "m", *flags)
    assert "1 of 6 images could not be decoded (first: " in caplog.text
    run_cli("embed-images", *common, "--model", tmp_path / "m", "--out", tmp_path / "v.npy")
    vectors = np.load(tmp_path / "v.npy", allow_pickle=False)
    assert (
        not vectors[2].any() and np.linalg.norm(np.delete(vectors, 2, axis=0), axis=1).min() > 0.99
    )


def test_recsys_train_image_stage_uses_the_same_rule():
    from recsys.model.config import ImageConfig

    cfg = ImageConfig().encoder_config()
    assert (cfg.input_size, cfg.train_size) == (None, None)  # chosen by the rule at fit time
    assert ImageConfig(input_size=32).encoder_config().input_size == 32
    with pytest.raises(ValueError, match="input_size"):
        ImageConfig(input_size=4)


@pytest.mark.parametrize(
    ("precision", "device", "cpu_bf16", "expected"),
    [("auto", "cuda", {}, "bf16"), ("auto", "cpu", {"amx_bf16": True}, "bf16"),
     ("auto", "cpu", {"amx_bf16": False, "avx512_bf16": True}, "bf16"),
     ("auto", "cpu", {"amx_bf16": False, "avx512_bf16": False}, "fp32"),
     ("auto", "cpu", {}, "fp32"), ("fp32", "cuda", {"amx_bf16": True}, "fp32"),
     ("bf16", "cpu", {}, "bf16")],
)  # fmt: skip
def test_precision_is_bf16_on_cuda_and_on_cpus_with_bf16_in_hardware(
    precision, device, cpu_bf16, expected, monkeypatch
):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: cpu_bf16)
    assert precision_for(precision, device) == expected


def test_an_unknown_precision_names_the_choices():
    with pytest.raises(InvalidInput, match="auto, bf16, fp32"):
        precision_for("fp16", "cpu")


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_a_cpu_trains_in_either_precision_and_saves_the_one_it_used(precision, tmp_path):
    cfg = _tiny(input_size=16)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=precision))
    enc = ImageEncoder(cfg, device="cpu").fit(_colour_files(tmp_path / "img", side=20))
    assert np.isfinite(enc.train_result_.loss)
    assert np.isfinite(enc.transform(_colour_files(tmp_path / "img", side=20))).all()
    saved = json.loads((enc.save(tmp_path / "m") / "config.json").read_text())
    assert saved["train"]["precision"] == precision
