"""Score the self-supervised image encoder, at the CLI's defaults, on Fashion-MNIST or OpenMoji.

The encoder is built exactly as `recsys train-images` builds it: ``ImageEncoderConfig()``'s
defaults, the input and view sizes chosen by the size rule (``recsys.vision.recipe``) from the
images and the device; only options given here change it. Labels are used only to score.

* ``fashion-mnist``: trains on the 60k train images, embeds train (the gallery) and test (the
  queries); kNN accuracy (k=20, cosine, temperature-weighted votes) and precision@10 of
  same-class retrieval.
* ``openmoji`` (``--data-dir``: a folder written by `recsys datasets prepare openmoji`): trains
  on every image file, embeds them all; leave-one-out precision@10 of same-group and
  same-subgroup retrieval.

Both beside mean-centred raw pixels at the same size and channels, and a random-init backbone.
The machine's load average is recorded before and after (a shared CPU trains fewer epochs in
a time budget). Examples (the benchmarks/RESULTS.md runs):

    .venv/bin/python scripts/eval_image_encoder.py --dataset fashion-mnist --time-budget 900 \\
        --device cpu --json var/eval/fmnist_cpu.json
    .venv/bin/python scripts/eval_image_encoder.py --dataset openmoji --data-dir /tmp/openmoji \\
        --time-budget 300 --device cpu --json var/eval/openmoji_cpu.json
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pandas as pd
import torch

from recsys.vision import ImageEncoder, ImageEncoderConfig
from recsys.vision.backbones import build_backbone
from recsys.vision.cache import decoded_images
from recsys.vision.data import as_image_tensor, channel_stats
from recsys.vision.encoder import apply_whitening, embed_tensor, fit_whitening, resolve_device
from recsys.vision.evaluate import knn_accuracy, precision_at_k

log = logging.getLogger("eval_image_encoder")


@dataclass(frozen=True)
class Task:
    """Images to train on (no labels) and how to score vectors of them."""

    name: str
    gallery: object  # file paths or a uint8 array; the encoder trains on these
    gallery_labels: dict[str, np.ndarray]  # label name -> (G,) ints
    queries: object | None = None  # None = leave-one-out over the gallery
    query_labels: dict[str, np.ndarray] | None = None


def fashion_mnist_task(data_dir: str | None) -> Task:
    from recsys.datasets.fashion_mnist import FashionMnistSource, load_fashion_mnist

    source = FashionMnistSource(local_dir=Path(data_dir)) if data_dir else None
    train_x, train_y = load_fashion_mnist("train", source)
    test_x, test_y = load_fashion_mnist("test", source)
    return Task("fashion-mnist", train_x, {"class": train_y}, test_x, {"class": test_y})


def openmoji_task(data_dir: str | None) -> Task:
    if data_dir is None:
        raise click.UsageError("--dataset openmoji needs --data-dir (recsys datasets prepare)")
    root = Path(data_dir)
    items = pd.read_csv(root / "items.csv").merge(pd.read_csv(root / "labels.csv"), on="item_id")
    labels = {name: pd.factorize(items[name])[0] for name in ("group", "subgroup")}
    return Task("openmoji", [root / p for p in items["image"]], labels)


TASKS = {"fashion-mnist": fashion_mnist_task, "openmoji": openmoji_task}


def saved_model_options(command):
    """``--dataset``, ``--data-dir`` and ``--load``: for scripts that score a model this
    script saved (``--model-dir``); ``saved_model`` reads them."""
    command = click.option(
        "--load", "load_dir", required=True, help="A model eval_image_encoder.py saved."
    )(command)
    command = click.option(
        "--data-dir", default=None, help="The data set's folder (openmoji: required)."
    )(command)
    return click.option("--dataset", type=click.Choice(list(TASKS)), required=True)(command)


def saved_model(dataset: str, data_dir: str | None, load_dir: str) -> tuple[Task, ImageEncoder]:
    """The data set's task and the saved model, on the CPU."""
    return TASKS[dataset](data_dir), ImageEncoder.load(load_dir, device="cpu")


def scores(task: Task, gallery_vec: np.ndarray, query_vec: np.ndarray | None) -> dict:
    """P@10 per label (leave-one-out without queries), and kNN accuracy with queries."""
    out = {}
    for name, g_labels in task.gallery_labels.items():
        if query_vec is None:
            out[f"{name}_p10"] = precision_at_k(
                gallery_vec, g_labels, gallery_vec, g_labels, 10, True
            )
            continue
        q_labels = task.query_labels[name]
        out[f"{name}_knn"] = knn_accuracy(query_vec, q_labels, gallery_vec, g_labels, k=20)
        out[f"{name}_p10"] = precision_at_k(query_vec, q_labels, gallery_vec, g_labels, k=10)
    return out


def as_uint8(images, cfg: ImageEncoderConfig) -> torch.Tensor:
    """(N, C, S, S) uint8 at the encoder's input size, decoded like the encoder decodes."""
    if isinstance(images, np.ndarray):
        return as_image_tensor(images, cfg.input_size, cfg.channels)
    return decoded_images(images, cfg.input_size, cfg.channels)


def pixel_scores(task: Task, cfg: ImageEncoderConfig) -> dict:
    """Raw pixels at the encoder's input size and channels, centred on the gallery mean."""
    gallery = as_uint8(task.gallery, cfg).flatten(1).float().div_(255)  # (G, C*S*S)
    mean = gallery.mean(0)
    queries = None
    if task.queries is not None:
        queries = (as_uint8(task.queries, cfg).flatten(1).float() / 255 - mean).numpy()
    return scores(task, (gallery - mean).numpy(), queries)


def random_init_scores(task: Task, cfg: ImageEncoderConfig, device) -> dict:
    torch.manual_seed(cfg.train.seed)
    backbone = build_backbone(cfg.backbone, cfg.channels, cfg.input_size, cfg.width)
    gallery = as_uint8(task.gallery, cfg)
    mean, std = channel_stats(gallery)
    queries = None
    if task.queries is not None:
        queries = embed_tensor(backbone, as_uint8(task.queries, cfg), mean, std, device)
    return scores(task, embed_tensor(backbone, gallery, mean, std, device), queries)


def encoder_scores(task: Task, enc: ImageEncoder, opts: dict) -> dict[str, dict]:
    """Train (unless ``--load`` gave a fitted encoder), then score with the model's
    whitening, without it, and refitted at each ``--whiten-also`` power (on the gallery's
    vectors, as ``fit`` fits it)."""
    row = {}
    if not opts["load_dir"]:
        t0 = time.monotonic()
        enc.fit(task.gallery)
        fit_s = time.monotonic() - t0
        if opts["model_dir"]:
            enc.save(opts["model_dir"])
        r = enc.train_result_
        row = dict(
            train_s=round(r.elapsed, 1),
            fit_wall_s=round(fit_s, 1),
            epochs=round(r.epochs, 2),
            images_per_s=round(r.images_per_s, 1),
            final_loss=round(r.loss, 4),
        )
    t0 = time.monotonic()
    gallery, queries = unwhitened(task, enc)
    row["embed_s"] = round(time.monotonic() - t0, 1)
    cfg, own = enc.config_, enc.whitening_
    name = f"{cfg.method} {cfg.backbone}"

    def whitened(whitening) -> dict:
        return whitened_scores(task, gallery, queries, whitening)

    rows = {f"{name} (ours)": whitened(own) | row}
    rows[f"{name} (ours, no whitening)"] = whitened(None)
    for power in opts["whiten_also"]:
        refit = fit_whitening(gallery, power, cfg.whiten_shrink)
        rows[f"{name} (ours, whitening {power:g})"] = whitened(refit)
    if opts["also_flip"] and not cfg.embed_flip:
        rows[f"{name} (ours, flip-averaged)"] = flip_scores(task, enc)
    return rows


def flip_scores(task: Task, enc: ImageEncoder) -> dict:
    """Scores of flip-averaged vectors (``embed_flip``: each image's and its mirror image's
    features averaged), whitened as ``fit`` would whiten them: refitted on the gallery's own."""
    cfg = enc.config_
    enc.config_ = dataclasses.replace(cfg, embed_flip=True)
    try:
        gallery, queries = unwhitened(task, enc)
    finally:
        enc.config_ = cfg
    whitening = fit_whitening(gallery, cfg.whiten, cfg.whiten_shrink)
    return whitened_scores(task, gallery, queries, whitening)


def unwhitened(task: Task, enc: ImageEncoder) -> tuple[np.ndarray, np.ndarray | None]:
    """The gallery's and the queries' vectors before the model's whitening (what it is fitted
    on)."""
    own, enc.whitening_ = enc.whitening_, None
    try:
        gallery = enc.transform(task.gallery)
        queries = None if task.queries is None else enc.transform(task.queries)
    finally:
        enc.whitening_ = own
    return gallery, queries


def whitened_scores(task: Task, gallery: np.ndarray, queries, whitening) -> dict:
    """Scores of the gallery and queries under ``whitening`` (None: as they are)."""
    q = None if queries is None else apply_whitening(queries, whitening)
    return scores(task, apply_whitening(gallery, whitening), q)


_TRAIN = (
    "epochs",
    "time_budget",
    "batch_size",
    "lr",
    "seed",
    "warmup",
    "weight_decay",
    "precision",
)
_TOP = ("method", "backbone", "width", "input_size", "train_size", "whiten")
_AUGMENT = ("erase_p", "hflip", "saturation", "grayscale", "hue", "n_local", "local_size")


def _given(opts: dict, names) -> dict:
    return {k: opts[k] for k in names if opts[k] is not None}


def build_config(opts: dict) -> ImageEncoderConfig:
    """``ImageEncoderConfig()``, the CLI's recipe, with only the options given here changed."""
    base = ImageEncoderConfig()
    train = dataclasses.replace(base.train, **_given(opts, _TRAIN))
    heads = dataclasses.replace(
        base.heads, **_given(opts, ("temperature", "hidden_dim", "proj_dim"))
    )
    augment = dataclasses.replace(base.augment, **_given(opts, _AUGMENT))
    if opts["min_scale"] is not None:
        augment = dataclasses.replace(augment, scale=(opts["min_scale"], 1.0))
    if opts["jitter"] is not None:
        augment = dataclasses.replace(augment, brightness=opts["jitter"], contrast=opts["jitter"])
    top = _given(opts, _TOP)
    return dataclasses.replace(base, train=train, heads=heads, augment=augment, **top)


@click.command()
@click.option("--dataset", type=click.Choice(["fashion-mnist", "openmoji"]), required=True)
@click.option("--data-dir", default=None, help="F-MNIST: *-ubyte.gz folder; openmoji: prepared.")
@click.option("--time-budget", type=float, default=None, help="Seconds of training.")
@click.option("--epochs", type=int, default=None, help="Used without --time-budget.")
@click.option("--method", type=click.Choice(["simclr", "byol", "dino"]), default=None)
@click.option("--backbone", default=None, help="Default: the CLI's (auto).")
@click.option("--width", type=int, default=None)
@click.option("--input-size", type=int, default=None, help="Default: the size rule.")
@click.option("--train-size", type=int, default=None, help="Default: the size rule.")
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--warmup", type=float, default=None)
@click.option("--weight-decay", type=float, default=None)
@click.option("--temperature", type=float, default=None)
@click.option("--hidden-dim", type=int, default=None, help="Projection head's hidden width.")
@click.option("--proj-dim", type=int, default=None, help="Projection head's output width.")
@click.option("--min-scale", type=float, default=None, help="Crop area range (min, 1).")
@click.option("--erase-p", type=float, default=None)
@click.option("--n-local", type=int, default=None, help="Local views per image (multi-crop).")
@click.option("--local-size", type=int, default=None, help="Side of a local view, px.")
@click.option("--jitter", type=float, default=None, help="Brightness/contrast jitter.")
@click.option("--hflip", type=float, default=None)
@click.option("--saturation", type=float, default=None, help="Saturation jitter (colour).")
@click.option("--hue", type=float, default=None, help="Hue jitter, share of the circle (colour).")
@click.option("--grayscale", type=float, default=None, help="Probability of a gray view.")
@click.option("--whiten", type=float, default=None, help="0 = off, 1 = full whitening.")
@click.option("--seed", type=click.IntRange(min=0), default=None)
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default=None)
@click.option("--device", default="auto", show_default=True)
@click.option("--baselines/--no-baselines", default=True, show_default=True)
@click.option("--model-dir", type=click.Path(file_okay=False), default=None)
@click.option(
    "--load",
    "load_dir",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Score the model an earlier run saved with --model-dir instead of training one.",
)
@click.option(
    "--whiten-also",
    type=float,
    multiple=True,
    help="Also score with the whitening refitted at this power (repeatable; 0 = none).",
)
@click.option(
    "--also-flip",
    is_flag=True,
    help="Also score flip-averaged vectors (embed_flip), whitening refitted on them.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@click.option("--progress/--no-progress", default=True)
def main(**opts) -> None:
    """Train on a data set's images (unlabelled) at the CLI's defaults and score the vectors."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    load_before = os.getloadavg()
    device = resolve_device(opts["device"])
    task = TASKS[opts["dataset"]](opts["data_dir"])
    if opts["load_dir"]:
        _check_load(opts)
        enc = ImageEncoder.load(opts["load_dir"], device=str(device))
        cfg = enc.config_
    else:
        enc = ImageEncoder(build_config(opts), str(device), show_progress=opts["progress"])
        cfg = enc.resolved_config(task.gallery)
    click.echo(
        f"{task.name}: input {cfg.input_size} px, views {cfg.train_size} px, "
        f"{cfg.channels} channel(s), {cfg.method} {cfg.backbone} on {device}, "
        f"{cfg.train.precision}"
    )
    rows: dict[str, dict] = {}
    if opts["baselines"]:
        rows["raw pixels (mean-centred)"] = pixel_scores(task, cfg)
        rows[f"random-init {cfg.backbone}"] = random_init_scores(task, cfg, device)
    rows.update(encoder_scores(task, enc, opts))
    env = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "config": enc.config_.to_dict(),
    }
    report(task, rows, opts, env)


def _check_load(opts: dict) -> None:
    """``--load`` scores a trained model: refuse the options that only shape training."""
    if opts["model_dir"] is not None:
        raise click.UsageError("--model-dir keeps a model this run trains; --load trains none")
    heads = ("temperature", "hidden_dim", "proj_dim")
    shaping = (*_TRAIN, *_TOP, *_AUGMENT, "min_scale", "jitter", *heads)
    given = [name for name in shaping if opts[name] is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        hint = " (use --whiten-also)" if given[0] == "whiten" else ""
        raise click.UsageError(f"{flag} shapes training; --load scores a trained model{hint}")


def report(task: Task, rows: dict[str, dict], opts: dict, env: dict) -> None:
    metrics = [k for k in next(iter(rows.values())) if k.endswith(("_knn", "_p10"))]
    click.echo(f"\n{task.name}, device {env['device']}, load average before {env['load_before']}")
    click.echo(f"{'vectors':40s} " + " ".join(f"{m:>12s}" for m in metrics) + "  training")
    for name, r in rows.items():
        extra = ""
        if "train_s" in r:
            extra = f"{r['train_s']:.0f} s, {r['epochs']} ep, {r['images_per_s']:.0f} img/s"
        click.echo(f"{name:40s} " + " ".join(f"{r[m]:12.4f}" for m in metrics) + f"  {extra}")
    click.echo(f"load average after: {env['load_after']}")
    if opts["json_path"]:
        path = Path(opts["json_path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"options": opts, "env": env, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
