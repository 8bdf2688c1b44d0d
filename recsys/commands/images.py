"""`recsys train-images` and `recsys embed-images`: the self-supervised image encoder."""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
from pathlib import Path

import click
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from recsys.catalog import Item
from recsys.catalog.db import connect_current
from recsys.commands import Finite, OutPath, progress_option
from recsys.errors import InvalidInput
from recsys.files import out_path, writing
from recsys.settings import DEVICE, Settings
from recsys.vision import ImageEncoder, ImageEncoderConfig, TrainConfig
from recsys.vision.backbones import BACKBONES
from recsys.vision.data import read_items_csv
from recsys.vision.encoder import resolve_device
from recsys.vision.methods import METHODS
from recsys.vision.recipe import MAX_INPUT_SIZE
from recsys.vision.train import PRECISIONS

_DEVICE_HELP = "auto, cpu, cuda or cuda:N; overrides the global --device."


def _device(ctx, param, value: str | None) -> str | None:
    """--device held to the global option's rule (torch's own error was a traceback)."""
    if value is not None and not DEVICE.match(value):
        raise click.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N")
    return value


_RAY_HELP = (
    "Run on Ray (--ray-address, or a local Ray instance when none is set) with this many "
    "{what} [default: in-process; with --ray-address: one per GPU, else one per node]."
)
_CPUS_HELP = "CPUs per Ray worker [default: the cluster's CPUs shared among the workers]."
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


def _unreadable_option(command):
    return click.option(
        "--skip-unreadable/--stop-on-unreadable",
        default=True,
        show_default=True,
        help="A photo that cannot be decoded (truncated, not an image, over the pixel limit): "
        "left out with a warning, as `recsys train` does (trained as black, embedded as a "
        "zero vector), or stop on it.",
    )(command)


def _image_source(command):
    """--items and --images-root: where the images come from (``item_images``)."""
    command = click.option(
        "--images-root",
        type=click.Path(exists=True, file_okay=False),
        help="Folder the image paths of --items are relative to [default: the CSV's folder].",
    )(command)
    return click.option(
        "--items",
        type=click.Path(exists=True, dir_okay=False),
        help="CSV with item_id and image columns [default: the catalog's items with an image].",
    )(command)


def ray_options(what: str):
    """--workers, --cpus-per-worker and --gpus-per-worker (Ray workers or actors)."""

    def decorate(command):
        command = click.option(
            "--gpus-per-worker",
            type=Finite(min=0),
            default=0.0,
            show_default=True,
            help="GPUs per Ray worker; 0 = CPU.",
        )(command)
        command = click.option("--cpus-per-worker", type=click.IntRange(min=1), help=_CPUS_HELP)(
            command
        )
        return click.option(
            "--workers", type=click.IntRange(min=1), help=_RAY_HELP.format(what=what)
        )(command)

    return decorate


def ray_setup(settings: Settings, opts: dict):
    """(address, RayResources or None) when this command runs on Ray, else None."""
    if not (settings.ray_address or opts["workers"]):
        return None
    from recsys.engines.ray_cluster import RayResources, connect

    address = settings.ray_address or "local"
    seconds = connect(address)
    if opts["workers"] is None:
        resources = RayResources.for_cluster()
    else:
        resources = RayResources(
            opts["workers"], opts["cpus_per_worker"] or 0, opts["gpus_per_worker"]
        )
    click.echo(f"Ray at {address} ({seconds:.1f} s to connect): {_describe(resources)}")
    return address, resources


def _describe(resources) -> str:
    device = f"{resources.gpus_per_worker:g} GPU" if resources.gpus_per_worker else "CPU"
    return f"{resources.workers} worker(s) x {resources.cpus()} CPU, {device}"


def _config(opts: dict) -> ImageEncoderConfig:
    train = TrainConfig(
        epochs=opts["epochs"],
        time_budget=opts["time_budget"],
        batch_size=opts["batch_size"],
        lr=opts["lr"],
        seed=opts["seed"],
        precision=opts["precision"],
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
@_image_source
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default="simclr",
    show_default=True,
    help="Self-supervised method: SimCLR (contrastive), BYOL or DINO (teacher-student).",
)
@click.option(
    "--backbone",
    type=click.Choice(("auto", *BACKBONES)),
    default="auto",
    show_default=True,
    help="auto: small_cnn on a CPU; on a GPU resnet18 from 64 px inputs up, small_cnn below.",
)
@click.option("--out", required=True, type=OutPath(), help="Model folder.")
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Passes over the images (--time-budget replaces it).",
)
@click.option(
    "--time-budget",
    type=Finite(min=0, min_open=True),
    help="Train for this many seconds instead of --epochs.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=2),
    default=256,
    show_default=True,
    help="Images per step (each gives two views).",
)
@click.option(
    "--lr",
    type=Finite(min=0, min_open=True),
    default=2e-3,
    show_default=True,
    help="Peak learning rate.",
)
@click.option(
    "--input-size",
    type=click.IntRange(min=8, max=MAX_INPUT_SIZE),
    help="Side the images are resized to [default: their median short side, at most 64 px on "
    "a CPU, 224 px on a GPU].",
)
@click.option(
    "--train-size",
    type=click.IntRange(min=8, max=MAX_INPUT_SIZE),
    help="Side of the training views, at most the input size [default: 0.7 x the input size].",
)
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False),
    help="A local checkpoint to start the backbone from (nothing is downloaded).",
)
@click.option("--device", callback=_device, help=_DEVICE_HELP)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="Forward-pass precision; auto = bf16 on a GPU and on CPUs with bf16 in hardware "
    "(AMX, AVX-512 BF16), else fp32.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the initial weights and the augmentations.",
)
@click.option("--cache-dir", type=click.Path(file_okay=False), help=_CACHE_HELP)
@_unreadable_option
@progress_option
@ray_options("DDP workers (Ray Train)")
@click.option(
    "--ray-storage",
    metavar="PATH",
    help="Where Ray Train keeps checkpoints: a folder every node reaches, or s3://... "
    "[default: <out>/ray].",
)
@click.pass_obj
def train_images(settings: Settings, **opts) -> None:
    """Train an image encoder without labels on the items' images.

    Images come from --items (a CSV with item_id and an image path relative to
    --images-root) or, without --items, from the catalog's items with an image_path. An
    interrupted run resumes from the checkpoint in --out when started again.

    On Ray (--ray-address or --workers) each of N workers trains on --batch-size images per
    step with DDP: the effective batch is N x --batch-size, the learning rate N x --lr, and
    an epoch N times fewer steps.
    """
    _check_sizes(opts["input_size"], opts["train_size"])
    if opts["weights"] is not None:  # before any image is decoded
        from recsys.vision.backbones import read_weights

        read_weights(opts["weights"])
    ids, paths = item_images(settings, opts["items"], opts["images_root"])
    ray = ray_setup(settings, opts)
    encoder = _train_encoder(settings, opts, ray)
    cfg = encoder.resolved_config(paths)
    if ray is not None:
        n = ray[1].workers
        click.echo(
            f"effective batch {n} x {cfg.train.batch_size} = {n * cfg.train.batch_size} "
            f"images per step, learning rate {n} x {cfg.train.lr:g} = {n * cfg.train.lr:g}"
        )
    colour = "colour" if cfg.channels == 3 else "grayscale"
    click.echo(
        f"{len(ids)} {colour} images: input {cfg.input_size} px, training views "
        f"{cfg.train_size} px, {cfg.method} {cfg.backbone} on {resolve_device(encoder.device)}, "
        f"{cfg.train.precision}"
    )
    encoder.fit(paths)
    encoder.save(opts["out"])
    r = encoder.train_result_
    click.echo(
        f"trained {encoder.config_.method} ({encoder.config_.backbone}) on {len(ids)} images: "
        f"{r.steps} steps, {r.epochs:.1f} epochs, {r.elapsed:.0f} s, "
        f"{r.images_per_s:.0f} images/s, loss {r.loss:.4f}; model in {opts['out']}"
    )
    if ray is not None:
        click.echo(f"Ray Train start-up and shut-down: {encoder.startup_s_:.1f} s")


def _check_sizes(input_size: int | None, train_size: int | None) -> None:
    """--train-size at most --input-size, before any image is read (the views are crops of
    the input image; `--train-size 32 --input-size 16` named neither option)."""
    if input_size and train_size and train_size > input_size:
        raise click.BadParameter(
            f"{train_size} is larger than --input-size {input_size}: the training views are "
            f"crops of the input image, so at most {input_size} px; give a smaller "
            "--train-size or a larger --input-size, or leave --train-size out (0.7 x the "
            "input size)",
            param_hint="'--train-size'",
        )


def _train_encoder(settings: Settings, opts: dict, ray) -> ImageEncoder:
    """An ``ImageEncoder``, or with ``ray`` (address, resources) a ``RayImageEncoder``."""
    kwargs = {
        "device": opts["device"] or settings.device,
        "model_dir": opts["out"],
        "show_progress": opts["progress"],
        "cache_dir": _cache_dir(settings, opts),
        "skip_unreadable": opts["skip_unreadable"],
    }
    if ray is None:
        return ImageEncoder(_config(opts), **kwargs)
    from recsys.engines.ray_train import RayImageEncoder

    address, resources = ray
    storage = opts["ray_storage"]
    return RayImageEncoder(
        _config(opts), **kwargs, address=address, resources=resources, storage=storage
    )


@click.command("embed-images")
@click.option(
    "--model",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="A folder `recsys train-images --out` wrote.",
)
@_image_source
@click.option(
    "--out", required=True, type=OutPath(file_okay=True, dir_okay=False), help="Vectors, .npy."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Images per forward pass (on a GPU, small images are batched up to about 16 MB).",
)
@click.option("--device", callback=_device, help=_DEVICE_HELP)
@click.option("--cache-dir", type=click.Path(file_okay=False), help=_CACHE_HELP)
@_unreadable_option
@progress_option
@ray_options("encoder actors (Ray Data)")
@click.pass_obj
def embed_images(settings: Settings, **opts) -> None:
    """Write L2-normalised float32 vectors, one row per item in the items' order.

    The item ids are written beside the vectors, one per line (v.npy -> v.ids.txt). On Ray
    (--ray-address or --workers) the images are decoded in Ray Data tasks and embedded by an
    actor pool (the vectors equal the in-process ones); the image files must be readable at
    the same paths on every node.
    """
    ids, paths = item_images(settings, opts["items"], opts["images_root"])
    ray = ray_setup(settings, opts)
    device = "cpu" if ray is not None else opts["device"] or settings.device
    encoder = ImageEncoder.load(opts["model"], device=device)
    encoder.show_progress = opts["progress"]
    encoder.cache_dir = _cache_dir(settings, opts)
    encoder.skip_unreadable = opts["skip_unreadable"]
    click.echo(f"embedding {len(ids)} images at {encoder.config_.input_size} px (the model's size)")
    if ray is None:
        vectors = encoder.transform(paths, batch_size=opts["batch_size"])
    else:
        from recsys.engines.ray_embed import embed_files

        vectors = embed_files(encoder, paths, ray[1], opts["batch_size"], opts["progress"])
    out = out_path(opts["out"])
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        _save_npy(out, vectors)
        ids_path = out.with_suffix(".ids.txt")
        ids_path.write_text("".join(f"{i}\n" for i in ids))
    click.echo(f"wrote {vectors.shape[0]} x {vectors.shape[1]} vectors to {out}")


def _cache_dir(settings: Settings, opts: dict) -> Path:
    return Path(opts["cache_dir"] or settings.artifacts_dir / "image-cache")


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npy")
    try:
        np.save(tmp, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException as exc:  # a full disk left the part it had written
        tmp.unlink(missing_ok=True)
        if not isinstance(exc, OSError) or exc.errno is not None:
            raise
        # numpy's tofile says no errno ("[Errno None] None"): a full disk is the likely cause
        full = shutil.disk_usage(path.parent).free < array.nbytes
        code = errno.ENOSPC if full else errno.EIO
        raise OSError(code, os.strerror(code), str(path)) from exc
