"""Evaluate the self-supervised image encoder on Fashion-MNIST.

Trains on the 60k train images without labels, embeds train (the gallery) and test (the
queries), and prints kNN accuracy (k=20, cosine, temperature-weighted votes) and precision@10
of same-class retrieval beside raw pixels and a random-init backbone. Labels are used only to
score. Example (the CPU target run):

    nice -n 10 .venv/bin/python scripts/eval_image_encoder.py --method simclr \\
        --time-budget 900 --device cpu --json var/eval/simclr_cpu.json
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import click
import numpy as np
import torch

from recsys.datasets.fashion_mnist import FashionMnistSource, load_fashion_mnist
from recsys.vision import AugmentConfig, ImageEncoder, ImageEncoderConfig, MethodConfig, TrainConfig
from recsys.vision.backbones import build_backbone
from recsys.vision.data import as_image_tensor, channel_stats
from recsys.vision.encoder import embed_tensor, resolve_device
from recsys.vision.evaluate import knn_accuracy, precision_at_k

log = logging.getLogger("eval_image_encoder")


def scores(train_vec, train_y, test_vec, test_y) -> dict[str, float]:
    return {
        "knn_acc": knn_accuracy(test_vec, test_y, train_vec, train_y, k=20),
        "p_at_10": precision_at_k(test_vec, test_y, train_vec, train_y, k=10),
    }


def pixel_vectors(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Mean-centred raw pixels (the evaluation L2-normalises them)."""
    return x.reshape(len(x), -1).astype(np.float32) / 255 - mean


def random_init_scores(cfg: ImageEncoderConfig, device, train_x, train_y, test_x, test_y):
    torch.manual_seed(cfg.train.seed)
    backbone = build_backbone(cfg.backbone, 1, cfg.input_size, cfg.width)
    tr = as_image_tensor(train_x, cfg.input_size, 1)
    te = as_image_tensor(test_x, cfg.input_size, 1)
    mean, std = channel_stats(tr)
    return scores(
        embed_tensor(backbone, tr, mean, std, device),
        train_y,
        embed_tensor(backbone, te, mean, std, device),
        test_y,
    )


def build_config(opts: dict) -> ImageEncoderConfig:
    train = TrainConfig(
        epochs=opts["epochs"],
        time_budget=opts["time_budget"],
        batch_size=opts["batch_size"],
        lr=opts["lr"],
        seed=opts["seed"],
        warmup=opts["warmup"],
        weight_decay=opts["weight_decay"],
    )
    heads = MethodConfig(
        temperature=opts["temperature"], proj_dim=opts["proj_dim"], momentum=opts["momentum"]
    )
    augment = AugmentConfig(
        scale=(opts["min_scale"], 1.0),
        erase_p=opts["erase_p"],
        brightness=opts["jitter"],
        contrast=opts["jitter"],
        hflip=opts["hflip"],
    )
    return ImageEncoderConfig(
        method=opts["method"],
        backbone=opts["backbone"],
        width=opts["width"],
        input_size=opts["input_size"],
        train_size=opts["train_size"],
        channels=1,
        whiten=opts["whiten"],
        heads=heads,
        augment=augment,
        train=train,
    )


@click.command()
@click.option("--method", type=click.Choice(["simclr", "byol", "dino"]), default="simclr")
@click.option("--backbone", default="auto", show_default=True)
@click.option("--width", default=32, show_default=True)
@click.option("--input-size", default=28, show_default=True)
@click.option("--train-size", type=int, default=None, help="Global view size; default input.")
@click.option("--time-budget", type=float, default=None, help="Seconds of training.")
@click.option("--epochs", default=10, show_default=True, help="Used without --time-budget.")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--lr", default=2e-3, show_default=True)
@click.option("--warmup", default=0.05, show_default=True)
@click.option("--temperature", default=0.2, show_default=True)
@click.option("--proj-dim", default=128, show_default=True)
@click.option("--momentum", default=0.99, show_default=True, help="BYOL/DINO target EMA.")
@click.option("--min-scale", default=0.7, show_default=True)
@click.option("--erase-p", default=0.3, show_default=True)
@click.option("--jitter", default=0.4, show_default=True, help="Brightness/contrast jitter.")
@click.option("--hflip", default=0.5, show_default=True)
@click.option("--weight-decay", default=0.05, show_default=True)
@click.option("--whiten", default=0.5, show_default=True, help="0 = off, 1 = full whitening.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--data-dir", default=None, help="Folder of the *-ubyte.gz files.")
@click.option("--limit-train", type=int, default=None, help="Train on the first N images only.")
@click.option("--baselines/--no-baselines", default=True, show_default=True)
@click.option("--model-dir", type=click.Path(file_okay=False), default=None)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@click.option("--progress/--no-progress", default=True)
def main(**opts) -> None:
    """Train on Fashion-MNIST train images (unlabelled), score test against train."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = resolve_device(opts["device"])
    source = FashionMnistSource(local_dir=Path(opts["data_dir"])) if opts["data_dir"] else None
    train_x, train_y = load_fashion_mnist("train", source)
    test_x, test_y = load_fashion_mnist("test", source)
    cfg = build_config(opts)
    if cfg.backbone == "auto":
        cfg = dataclasses.replace(
            cfg, backbone="resnet18" if device.type == "cuda" else "small_cnn"
        )
    rows: dict[str, dict] = {}
    if opts["baselines"]:
        mean = train_x.reshape(len(train_x), -1).mean(0) / 255
        rows["raw pixels (mean-centred)"] = scores(
            pixel_vectors(train_x, mean), train_y, pixel_vectors(test_x, mean), test_y
        )
        rows[f"random-init {cfg.backbone}"] = random_init_scores(
            cfg, device, train_x, train_y, test_x, test_y
        )
    fit_x = train_x[: opts["limit_train"]] if opts["limit_train"] else train_x
    enc = ImageEncoder(cfg, device=str(device), show_progress=opts["progress"])
    t0 = time.monotonic()
    enc.fit(fit_x)
    fit_s = time.monotonic() - t0
    if opts["model_dir"]:
        enc.save(opts["model_dir"])
    t0 = time.monotonic()
    row = scores(enc.transform(train_x), train_y, enc.transform(test_x), test_y)
    result = enc.train_result_
    row.update(
        train_s=round(result.elapsed, 1),
        fit_wall_s=round(fit_s, 1),
        embed_s=round(time.monotonic() - t0, 1),
        epochs=round(result.epochs, 2),
        images_per_s=round(result.images_per_s, 1),
        final_loss=round(result.loss, 4),
    )
    rows[f"{cfg.method} {cfg.backbone} (ours)"] = row
    enc.whitening_ = None
    rows[f"{cfg.method} {cfg.backbone} (ours, no whitening)"] = scores(
        enc.transform(train_x), train_y, enc.transform(test_x), test_y
    )
    report(rows, opts, device)


def report(rows: dict[str, dict], opts: dict, device) -> None:
    click.echo(f"\nFashion-MNIST, test (10k) vs train gallery (60k), device {device}")
    click.echo(f"{'vectors':40s} {'kNN acc':>8s} {'P@10':>8s}  training")
    for name, r in rows.items():
        extra = ""
        if "train_s" in r:
            extra = f"{r['train_s']:.0f} s, {r['epochs']} ep, {r['images_per_s']:.0f} img/s"
        click.echo(f"{name:40s} {r['knn_acc']:8.4f} {r['p_at_10']:8.4f}  {extra}")
    if opts["json_path"]:
        path = Path(opts["json_path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        info = {"device": str(device), "torch": torch.__version__}
        path.write_text(json.dumps({"options": opts, "env": info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
