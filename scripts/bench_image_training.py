"""Training throughput of the image encoder, per method and backbone, on this machine.

For each (method, backbone) it times full training steps (batch slicing, batched tensor
augmentation, forward, backward, optimiser, EMA) and, for reference, the backbone's pure
forward+backward on ready-made tensors of the same shape (what training would cost if data and
augmentation were free). With --dataloader it also times the usual library recipe with the same
backbone: per-sample torchvision transforms on PIL images in a DataLoader, SimCLR, AdamW.

    nice -n 10 .venv/bin/python scripts/bench_image_training.py --device cpu \\
        --backbones small_cnn --dataloader --json var/bench/cpu.json

With --forward it times embedding (uint8 batches to vectors, as `embed-images` after decoding)
and the pure forward pass per backbone at --size px:

    python3 scripts/bench_image_training.py --forward --backbones resnet18 --size 224 --device cuda

With --embed-photos N it instead times `recsys embed-images`'s path on a catalog of N real-size
JPEGs (800x1000, written under --photos-dir on first use: 2,000 distinct photos hard-linked
to N paths, so decoding does the same work per path): decoding into the image cache plus
embedding, then the same again from the cache, with a trained --model.

    .venv/bin/python scripts/bench_image_training.py --embed-photos 100000 --model M --device cpu
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from recsys.vision.augment import AugmentConfig, BatchAugment
from recsys.vision.backbones import build_backbone
from recsys.vision.encoder import ImageEncoder, embed_tensor, embedding_batch, resolve_device
from recsys.vision.methods import MethodConfig, build_method
from recsys.vision.train import TrainConfig, Trainer, make_optimizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, device, warmup: int, steps: int) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls (device synchronised)."""
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def training_rate(method_name, backbone_name, data, opts, device) -> float:
    """Source images per second of full training steps (``Trainer.train_step``)."""
    size, width = opts["size"], opts["width"]
    torch.manual_seed(0)
    backbone = build_backbone(backbone_name, data.shape[1], size, width)
    method = build_method(method_name, backbone, MethodConfig())
    aug = BatchAugment(AugmentConfig(), size, [0.3], [0.35])
    cfg = TrainConfig(epochs=10_000, batch_size=opts["batch_size"])
    trainer = Trainer(method, aug, cfg, device)
    data = data.to(device)
    return opts["batch_size"] / _timed(
        lambda: trainer.train_step(data), device, opts["warmup"], opts["steps"]
    )


def pure_rate(backbone_name, channels, opts, device) -> float:
    """Source images per second of the backbone alone: fwd+bwd of both views, optimiser."""
    size, bs = opts["size"], opts["batch_size"]
    backbone = build_backbone(backbone_name, channels, size, opts["width"]).to(device)
    x = torch.randn(2 * bs, channels, size, size, device=device)  # (2B, C, S, S)
    if device.type == "cuda":
        backbone = backbone.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = make_optimizer(backbone, TrainConfig())

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = backbone(x).float().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return bs / _timed(step, device, opts["warmup"], opts["steps"])


class _TwoViews(Dataset):
    """The DataLoader recipe: PIL image -> two per-sample torchvision-augmented views."""

    def __init__(self, images: np.ndarray, size: int) -> None:
        self.images = images
        self.transform = transforms.Compose(
            [
                transforms.RandomResizedCrop(size, scale=(0.25, 1.0)),
                transforms.RandomHorizontalFlip(),
                transforms.RandomApply([transforms.ColorJitter(0.4, 0.4)], p=0.8),
                transforms.ToTensor(),
                transforms.Normalize([0.3], [0.35]),
            ]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        return self.transform(img), self.transform(img)


def dataloader_rate(images: np.ndarray, opts: dict) -> float:
    """Images per second of SimCLR fed by a DataLoader with per-sample augmentation (CPU)."""
    torch.manual_seed(0)
    method = build_method(
        "simclr", build_backbone("small_cnn", 1, 28, opts["width"]), MethodConfig()
    )
    opt = make_optimizer(method, TrainConfig())
    loader = DataLoader(
        _TwoViews(images, opts["size"]),
        batch_size=opts["batch_size"],
        shuffle=True,
        num_workers=opts["workers"],
        drop_last=True,
        persistent_workers=opts["workers"] > 0,
    )
    batches = iter(loader)

    def step() -> None:
        v1, v2 = next(batches)
        loss = method([v1, v2])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return opts["batch_size"] / _timed(step, torch.device("cpu"), opts["warmup"], opts["steps"])


_DISTINCT_PHOTOS = 2_000


def _photo(rng: np.random.Generator, width: int = 800, height: int = 1000) -> Image.Image:
    """A photo-like JPEG source: a smooth colour field, a bright object, sensor noise."""
    field = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    img = Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(img, dtype=np.int16)
    y, x = np.ogrid[:height, :width]
    cy, cx, r = rng.integers(300, 700), rng.integers(250, 550), rng.integers(120, 260)
    pixels[(y - cy) ** 2 + (x - cx) ** 2 < r**2] += rng.integers(-90, 90, size=3, dtype=np.int16)
    pixels += rng.normal(0, 6, size=pixels.shape).astype(np.int16)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def write_photos(folder: Path, n: int) -> list[Path]:
    """``n`` JPEG paths in ``folder``, hard links to ``_DISTINCT_PHOTOS`` distinct photos."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = [folder / f"{i:06d}.jpg" for i in range(n)]
    for i, path in enumerate(paths):
        if path.exists():
            continue
        if i < _DISTINCT_PHOTOS:
            _photo(rng).save(path, quality=90)
        else:
            os.link(paths[i % _DISTINCT_PHOTOS], path)
    return paths


def embed_rates(paths: list[Path], opts: dict) -> list[dict]:
    """Images/s of decoding + embedding into a fresh cache, then embedding from the cache."""
    cache = Path(tempfile.mkdtemp(prefix="recsys-bench-cache-"))
    rows = []
    try:
        for label in ("decode + embed (cold cache)", "embed (from the cache)"):
            enc = ImageEncoder.load(opts["model"], device=opts["device"])
            enc.show_progress, enc.cache_dir = True, cache
            t0 = time.perf_counter()
            vectors = enc.transform(paths, batch_size=opts["batch_size"])
            seconds = time.perf_counter() - t0
            size = enc.config_.input_size
            rows.append({"pass": label, "images": len(vectors), "input_size": size,
                         "seconds": seconds, "img_s": len(vectors) / seconds,
                         "load": os.getloadavg()})  # fmt: skip
            click.echo(f"{label}: {len(vectors)} photos at {size} px in {seconds:.0f} s, "
                       f"{len(vectors) / seconds:.0f} img/s, load {os.getloadavg()}")  # fmt: skip
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return rows


def forward_rates(opts: dict, device: torch.device) -> list[dict]:
    """Images/s of embedding (``embed_tensor``: uint8 host batches to L2-normalised vectors,
    the path ``ImageEncoder.transform`` takes after decoding) and of the backbone's pure forward
    pass on ready device tensors, per backbone at ``--size`` px and ``--channels``."""
    n, size, channels = opts["forward_images"], opts["size"], opts["channels"]
    data = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8)
    bs = embedding_batch(1024, data.shape[1:], device)  # what embedding runs; pure runs the same
    rows = []
    for name in opts["backbones"].split(","):
        backbone = build_backbone(name, channels, size, opts["width"]).to(device).eval()
        embed_tensor(backbone, data[:bs], [0.5] * channels, [0.25] * channels, device)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        embed_tensor(backbone, data, [0.5] * channels, [0.25] * channels, device, batch_size=bs)
        _sync(device)
        embed = n / (time.perf_counter() - t0)
        layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        x = torch.randn(bs, channels, size, size, device=device).contiguous(memory_format=layout)
        backbone = backbone.to(memory_format=layout)

        @torch.no_grad()
        def forward(backbone=backbone, x=x) -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                backbone(x)

        pure = bs / _timed(forward, device, opts["warmup"], opts["steps"])
        rows.append({"backbone": name, "size": size, "channels": channels, "batch": bs,
                     "embed_img_s": embed, "pure_forward_img_s": pure,
                     "embed_share_of_pure": embed / pure})  # fmt: skip
        click.echo(f"{name:10s} {size} px x{channels}: embed {embed:9.0f} img/s, "
                   f"pure forward {pure:9.0f} img/s ({embed / pure:.0%})")  # fmt: skip
    return rows


def load_images(data_dir: str | None) -> np.ndarray:
    from recsys.datasets.fashion_mnist import FashionMnistSource, load_fashion_mnist

    source = FashionMnistSource(local_dir=Path(data_dir)) if data_dir else None
    return load_fashion_mnist("train", source)[0]


@click.command()
@click.option("--device", default="auto", show_default=True)
@click.option("--methods", default="simclr,byol,dino", show_default=True)
@click.option("--backbones", default="small_cnn", show_default=True)
@click.option("--batch-size", default=256, show_default=True)
@click.option("--size", default=28, show_default=True, help="Size of the training views.")
@click.option("--width", default=32, show_default=True, help="small_cnn width.")
@click.option("--steps", default=20, show_default=True)
@click.option("--warmup", default=3, show_default=True)
@click.option("--dataloader", is_flag=True, help="Also time the DataLoader recipe (CPU).")
@click.option("--workers", default=2, show_default=True, help="DataLoader workers.")
@click.option("--data-dir", default=None, help="Folder of the Fashion-MNIST *-ubyte.gz files.")
@click.option("--embed-photos", type=int, default=None, help="Time embedding N JPEGs instead.")
@click.option("--photos-dir", default="/tmp/recsys-photos", show_default=True)
@click.option("--model", default=None, help="Trained encoder folder (with --embed-photos).")
@click.option("--forward", is_flag=True, help="Time embedding and pure forward passes instead.")
@click.option("--forward-images", default=20_000, show_default=True, help="Images embedded.")
@click.option("--channels", default=3, show_default=True, help="Channels (with --forward).")
@click.option("--json", "json_path", default=None)
def main(**opts) -> None:
    """Print images/s per method and backbone (and the DataLoader recipe)."""
    if opts["forward"]:
        device = resolve_device(opts["device"])
        _write_json(opts, forward_rates(opts, device))
        return
    if opts["embed_photos"]:
        if not opts["model"]:
            raise click.UsageError("--embed-photos needs --model (recsys train-images --out)")
        paths = write_photos(Path(opts["photos_dir"]), opts["embed_photos"])
        _write_json(opts, embed_rates(paths, opts))
        return
    device = resolve_device(opts["device"])
    images = load_images(opts["data_dir"])
    data = torch.from_numpy(images[:, None]).contiguous()  # (N, 1, 28, 28) uint8
    rows = []
    for backbone in opts["backbones"].split(","):
        pure = pure_rate(backbone, 1, opts, device)
        for method in opts["methods"].split(","):
            rate = training_rate(method, backbone, data, opts, device)
            rows.append(
                {
                    "method": method,
                    "backbone": backbone,
                    "train_img_s": rate,
                    "pure_fwd_bwd_img_s": pure,
                    "ratio": pure / rate,
                }
            )
    if opts["dataloader"]:
        rows.append(
            {
                "method": "simclr (DataLoader recipe)",
                "backbone": "small_cnn",
                "train_img_s": dataloader_rate(images, opts),
            }
        )
    click.echo(f"device {device}, batch {opts['batch_size']}, views {opts['size']}px")
    for r in rows:
        pure = r.get("pure_fwd_bwd_img_s")
        extra = f"  pure fwd+bwd {pure:8.0f} img/s ({r['ratio']:.2f}x)" if pure else ""
        click.echo(f"{r['method']:28s} {r['backbone']:10s} {r['train_img_s']:8.0f} img/s{extra}")
    _write_json(opts, rows)


def _write_json(opts: dict, rows: list[dict]) -> None:
    if opts["json_path"]:
        Path(opts["json_path"]).parent.mkdir(parents=True, exist_ok=True)
        Path(opts["json_path"]).write_text(json.dumps({"options": opts, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
