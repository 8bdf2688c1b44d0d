"""Ray against in-process on this machine: embedding and SSL training throughput, and the
quality of DDP training (issue 20). A script, not a test; figures go to benchmarks/RESULTS.md.

* ``--part embed``: `embed-images`'s work (decode PNG files, resize, embed) on ``--images``
  files (Fashion-MNIST's 70k train+test images written once as PNGs under ``--files-dir``,
  hard-linked up to the count), in-process (``ImageEncoder.transform``, no image cache) and on
  Ray Data with 1 actor of all cores and 2 actors of one core each.
* ``--part train``: one epoch of SSL training (SimCLR, small_cnn, 256 images per step in all,
  one learning rate) on ``--images`` Fashion-MNIST images (tiled), in-process and on Ray Train
  with 1 worker of all cores and 2 workers of one core (128 images each).
* ``--part knn``: Fashion-MNIST train, the CLI's defaults, ``--steps`` steps each: one process
  at batch 256, one process at batch 512 and twice the learning rate (what 2 workers compute
  together), and 2 Ray Train workers of 256 (lr scaled x2 by the engine); kNN accuracy
  (k=20, cosine, as scripts/eval_image_encoder.py) of test against train vectors.

The local Ray instance's start-up (``ray.init``) is timed apart and not counted in any rate;
for Ray runs the rate is given over the whole call (pipeline or trainer start included) and,
for training, over the training loop alone. The load average is printed before and after.

    nice -n 10 .venv/bin/python scripts/bench_ray.py --part embed --images 100000 \\
        --json var/bench/ray_embed.json
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image

from recsys.datasets.fashion_mnist import load_fashion_mnist
from recsys.engines.ray_cluster import RayResources
from recsys.vision import ImageEncoder, ImageEncoderConfig, TrainConfig
from recsys.vision.evaluate import knn_accuracy

log = logging.getLogger("bench_ray")


def fashion_mnist(n: int | None = None) -> np.ndarray:
    """Train then test images, (70k, 28, 28) uint8, tiled to ``n`` rows when given."""
    images = np.concatenate([load_fashion_mnist("train")[0], load_fashion_mnist("test")[0]])
    return images if n is None else images[np.arange(n) % len(images)]


def write_files(folder: Path, n: int) -> list[Path]:
    """``n`` PNG paths: the 70k Fashion-MNIST images once, hard links beyond."""
    folder.mkdir(parents=True, exist_ok=True)
    images = fashion_mnist()
    paths = [folder / f"{i}.png" for i in range(n)]
    for i, path in enumerate(paths):
        if path.exists():
            continue
        if i < len(images):
            Image.fromarray(images[i]).save(path)
        else:
            os.link(paths[i % len(images)], path)
    return paths


def start_ray() -> float:
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - start


def embed_part(opts: dict) -> list[dict]:
    from recsys.engines.ray_embed import embed_files

    paths = write_files(Path(opts["files_dir"]), opts["images"])
    config = ImageEncoderConfig(backbone="small_cnn", input_size=28, channels=1, whiten=0.0,
                                train=TrainConfig(epochs=1, batch_size=256))  # fmt: skip
    encoder = ImageEncoder(config, device="cpu").fit(fashion_mnist(512))
    rows = []
    start = time.perf_counter()
    reference = encoder.transform(paths)
    rows.append(_row("embed", "in-process", 1, time.perf_counter() - start, len(paths)))
    rows.append({"part": "embed", "engine": "ray.init", "seconds": start_ray()})
    cores = os.cpu_count() or 1
    for workers in (1, 2):
        resources = RayResources(workers, max(1, cores // workers))
        start = time.perf_counter()
        vectors = embed_files(encoder, paths, resources, batch_size=1024)
        row = _row("embed", "ray data", workers, time.perf_counter() - start, len(paths))
        row["max_abs_diff"] = float(np.abs(vectors - reference).max())
        rows.append(row)
    return rows


def train_part(opts: dict) -> list[dict]:
    from recsys.engines.ray_train import RayImageEncoder

    images, cores = fashion_mnist(opts["images"]), os.cpu_count() or 1
    rows = []

    def config(batch: int) -> ImageEncoderConfig:  # one epoch: images // 256 steps in all
        train = TrainConfig(epochs=1, batch_size=batch)
        return ImageEncoderConfig(backbone="small_cnn", input_size=28, whiten=0.0, train=train)

    start = time.perf_counter()
    local = ImageEncoder(config(256), device="cpu").fit(images)
    rows.append(_train_row("in-process", 1, time.perf_counter() - start, local))
    rows.append({"part": "train", "engine": "ray.init", "seconds": start_ray()})
    for workers in (1, 2):
        resources = RayResources(workers, max(1, cores // workers))
        enc = RayImageEncoder(config(256 // workers), "cpu", resources=resources)
        # the engine scales lr by the workers; divide first so every run trains at one lr
        enc.config = _with_lr(enc.config, enc.config.train.lr / workers)
        start = time.perf_counter()
        enc.fit(images)
        rows.append(_train_row("ray train", workers, time.perf_counter() - start, enc))
    return rows


def knn_part(opts: dict) -> list[dict]:
    from recsys.engines.ray_train import RayImageEncoder

    train_x, train_y = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    train_x, train_y = train_x[: opts["knn_train"]], train_y[: opts["knn_train"]]
    steps, per_epoch = opts["steps"], len(train_x)
    rows = []

    def config(batch: int, lr_scale: float = 1.0) -> ImageEncoderConfig:
        base = ImageEncoderConfig()
        epochs = max(1, round(steps * batch / per_epoch))
        train = TrainConfig(epochs=epochs, batch_size=batch, lr=base.train.lr * lr_scale)
        return ImageEncoderConfig(train=train)

    runs = [
        ("in-process, batch 256", lambda: ImageEncoder(config(256), "cpu")),
        ("in-process, batch 512, lr x2", lambda: ImageEncoder(config(512, 2.0), "cpu")),
        ("ray train, 2 workers x 256", lambda: _ray_encoder(RayImageEncoder, config(512))),
    ]
    ray_started = False
    for name, make in [runs[i] for i in opts["knn_runs"]]:
        if name.startswith("ray") and not ray_started:
            rows.append({"part": "knn", "engine": "ray.init", "seconds": start_ray()})
            ray_started = True
        start = time.perf_counter()
        enc = make().fit(train_x)
        seconds = time.perf_counter() - start
        accuracy = knn_accuracy(enc.transform(test_x), test_y, enc.transform(train_x), train_y)
        r = enc.train_result_
        rows.append({"part": "knn", "engine": name, "steps": r.steps, "seconds": seconds,
                     "train_images_per_s": r.images_per_s, "knn_accuracy": accuracy})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _ray_encoder(cls, config: ImageEncoderConfig):
    """2 workers x 256: ``config``'s epochs count 512-image steps; lr is the base lr."""
    config = ImageEncoderConfig(**{**config.__dict__, "train": _train(config, batch_size=256)})
    cores = os.cpu_count() or 1
    return cls(config, "cpu", resources=RayResources(2, max(1, cores // 2)))


def _train(config: ImageEncoderConfig, **changes) -> TrainConfig:
    return TrainConfig(**{**config.train.__dict__, **changes})


def _with_lr(config: ImageEncoderConfig, lr: float) -> ImageEncoderConfig:
    return ImageEncoderConfig(**{**config.__dict__, "train": _train(config, lr=lr)})


def _row(part: str, engine: str, workers: int, seconds: float, n: int) -> dict:
    row = {"part": part, "engine": engine, "workers": workers, "images": n}
    row.update(seconds=round(seconds, 2), images_per_s=round(n / seconds, 1))
    print(json.dumps(row), flush=True)
    return row


def _train_row(engine: str, workers: int, seconds: float, enc) -> dict:
    r = enc.train_result_
    row = {"part": "train", "engine": engine, "workers": workers, "steps": r.steps}
    row.update(seconds=round(seconds, 2), loop_seconds=round(r.elapsed, 2))
    row.update(images_per_s=round(r.steps * 256 / seconds, 1), loop_images_per_s=r.images_per_s)
    print(json.dumps(row), flush=True)
    return row


@click.command()
@click.option("--part", type=click.Choice(["embed", "train", "knn"]), required=True)
@click.option("--images", type=int, default=100_000, show_default=True)
@click.option("--steps", type=int, default=234, show_default=True, help="knn: training steps.")
@click.option("--knn-train", type=int, default=60_000, help="knn: first N train images.")
@click.option(
    "--knn-runs",
    type=click.IntRange(0, 2),
    multiple=True,
    default=(0, 1, 2),
    show_default=True,
    help="knn: which runs (0: batch 256, 1: batch 512 lr x2, 2: Ray 2 x 256).",
)
@click.option("--files-dir", default="/tmp/bench_ray_files", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def main(**opts) -> None:
    """Ray vs in-process on this machine; see the module docstring."""
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    rows = {"embed": embed_part, "train": train_part, "knn": knn_part}[opts["part"]](opts)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    result = {"opts": opts, "load_before": load_before, "load_after": load_after, "rows": rows}
    print(json.dumps(result, indent=1))
    if opts["json_path"]:
        Path(opts["json_path"]).parent.mkdir(parents=True, exist_ok=True)
        Path(opts["json_path"]).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
