"""`recsys train-images` and `recsys embed-images`: the self-supervised image encoder."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import click
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from recsys.catalog import Item
from recsys.catalog.db import connect_current
from recsys.errors import InvalidInput
from recsys.settings import Settings
from recsys.vision import ImageEncoder, ImageEncoderConfig, TrainConfig
from recsys.vision.backbones import BACKBONES
from recsys.vision.data import read_items_csv
from recsys.vision.encoder import resolve_device
from recsys.vision.methods import METHODS

_DEVICE_HELP = "auto, cpu, cuda or cuda:N; overrides the global --device."
_CACHE_HELP = (
    "Folder of decoded images, reused while the files are unchanged "
    "[default: <artifacts-dir>/image-cache]."
)


def catalog_images(settings: Settings) -> tuple[list[str], list[Path]]:
    """External ids and image paths of the catalog items that have an image."""
    engine = connect_current(settings.database_url)
    query = select(Item.external_id, Item.image_path).where(Item.image_path.is_not(None))
    with Session(engine) as session:
        rows = session.execute(query.order_by(Item.id)).all()
    if not rows:
        raise InvalidInput("no catalog item has an image_path; ingest items with images first")
    return [r[0] for r in rows], [Path(r[1]) for r in rows]


def item_images(settings: Settings, items: str | None, images_root: str | None):
    if items is None:
        return catalog_images(settings)
    return read_items_csv(items, images_root or Path(items).parent)


def _config(opts: dict) -> ImageEncoderConfig:
    train = TrainConfig(
        epochs=opts["epochs"],
        time_budget=opts["time_budget"],
        batch_size=opts["batch_size"],
        lr=opts["lr"],
        seed=opts["seed"],
    )
    return dataclasses.replace(
        ImageEncoderConfig(),
        method=opts["method"],
        backbone=opts["backbone"],
        input_size=opts["input_size"],
        train_size=opts["train_size"],
        weights=opts["weights"],
        train=train,
    )


@click.command("train-images")
@click.option("--items", type=click.Path(exists=True, dir_okay=False), help="CSV: item_id, image.")
@click.option("--images-root", type=click.Path(exists=True, file_okay=False))
@click.option("--method", type=click.Choice(METHODS), default="simclr", show_default=True)
@click.option("--backbone", type=click.Choice(("auto", *BACKBONES)), default="auto")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Model folder.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), help="Seconds.")
@click.option("--batch-size", type=click.IntRange(min=2), default=256, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option(
    "--input-size",
    type=click.IntRange(min=8),
    help="Side the images are resized to [default: their median short side, at most 64 px on "
    "a CPU, 224 px on a GPU].",
)
@click.option(
    "--train-size",
    type=click.IntRange(min=8),
    help="Side of the training views [default: 0.7 x the input size].",
)
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Backbone init.")
@click.option("--device", help=_DEVICE_HELP)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False), help=_CACHE_HELP)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.pass_obj
def train_images(settings: Settings, **opts) -> None:
    """Train an image encoder without labels on the items' images.

    Images come from --items (a CSV with item_id and an image path relative to
    --images-root) or, without --items, from the catalog's items with an image_path. An
    interrupted run resumes from the checkpoint in --out when started again.
    """
    ids, paths = item_images(settings, opts["items"], opts["images_root"])
    encoder = ImageEncoder(
        _config(opts),
        device=opts["device"] or settings.device,
        model_dir=opts["out"],
        show_progress=opts["progress"],
        cache_dir=_cache_dir(settings, opts),
    )
    cfg = encoder.resolved_config(paths)
    colour = "colour" if cfg.channels == 3 else "grayscale"
    click.echo(
        f"{len(ids)} {colour} images: input {cfg.input_size} px, training views "
        f"{cfg.train_size} px, {cfg.method} {cfg.backbone} on {resolve_device(encoder.device)}"
    )
    encoder.fit(paths)
    encoder.save(opts["out"])
    r = encoder.train_result_
    click.echo(
        f"trained {encoder.config_.method} ({encoder.config_.backbone}) on {len(ids)} images: "
        f"{r.steps} steps, {r.epochs:.1f} epochs, {r.elapsed:.0f} s, "
        f"{r.images_per_s:.0f} images/s, loss {r.loss:.4f}; model in {opts['out']}"
    )


@click.command("embed-images")
@click.option("--model", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--items", type=click.Path(exists=True, dir_okay=False), help="CSV: item_id, image.")
@click.option("--images-root", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Vectors, .npy.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--device", help=_DEVICE_HELP)
@click.option("--cache-dir", type=click.Path(file_okay=False), help=_CACHE_HELP)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.pass_obj
def embed_images(settings: Settings, **opts) -> None:
    """Write L2-normalised float32 vectors, one row per item in the items' order.

    The item ids are written beside the vectors as OUT with .ids.txt, one per line.
    """
    ids, paths = item_images(settings, opts["items"], opts["images_root"])
    encoder = ImageEncoder.load(opts["model"], device=opts["device"] or settings.device)
    encoder.show_progress = opts["progress"]
    encoder.cache_dir = _cache_dir(settings, opts)
    click.echo(f"embedding {len(ids)} images at {encoder.config_.input_size} px (the model's size)")
    vectors = encoder.transform(paths, batch_size=opts["batch_size"])
    out = Path(opts["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    _save_npy(out, vectors)
    ids_path = out.with_suffix(".ids.txt")
    ids_path.write_text("".join(f"{i}\n" for i in ids))
    click.echo(f"wrote {vectors.shape[0]} x {vectors.shape[1]} vectors to {out}")


def _cache_dir(settings: Settings, opts: dict) -> Path:
    return Path(opts["cache_dir"] or settings.artifacts_dir / "image-cache")


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npy")
    np.save(tmp, array, allow_pickle=False)
    os.replace(tmp, path)
