"""``ImageEncoder``: a scikit-learn-like estimator from product images to item vectors.

    enc = ImageEncoder(ImageEncoderConfig(method="simclr")).fit(images)
    vectors = enc.transform(images)  # (N, D) float32, L2-normalised
    enc.save("var/artifacts/images"); ImageEncoder.load("var/artifacts/images")

``images`` are file paths or a uint8 array ((N, H, W) or (N, H, W, C)); both are resized to
``input_size``, which by default follows the images and the device (``recsys.vision.recipe``).
Files are decoded once per encoder (``fit`` then ``transform`` of the same files decode them
once) or once per ``cache_dir`` (``recsys.vision.cache``). A model directory holds
``model.pt`` (backbone weights and the resolved configuration, chosen sizes included, loadable
with ``weights_only=True``), ``config.json`` and, while training, ``checkpoint.pt``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn
from tqdm import tqdm

from recsys.errors import InvalidInput
from recsys.vision.augment import AugmentConfig, BatchAugment
from recsys.vision.backbones import build_backbone, load_backbone_weights
from recsys.vision.cache import cache_key, decoded_images
from recsys.vision.data import ImageInput, as_image_tensor, channel_stats
from recsys.vision.methods import MethodConfig, build_method
from recsys.vision.recipe import (
    MAX_INPUT_SIZE,
    backbone_for,
    input_size_for,
    survey_images,
    view_size_for,
    width_for,
)
from recsys.vision.train import (
    Callback,
    TrainConfig,
    Trainer,
    TrainResult,
    load_saved,
    precision_for,
    save_atomic,
)

log = logging.getLogger(__name__)

MODEL_FILE, CONFIG_FILE, CHECKPOINT_FILE = "model.pt", "config.json", "checkpoint.pt"


@dataclass(frozen=True)
class ImageEncoderConfig:
    # simclr, byol or dino.
    method: str = "simclr"
    # small_cnn, resnet18, resnet50 or vit_tiny; auto = small_cnn on CPU, and on CUDA
    # resnet18 from 64 px inputs up, small_cnn below (recsys.vision.recipe).
    backbone: str = "auto"
    # Base width of small_cnn (its vectors have 8 * width dimensions); None = 32 on CPU,
    # 64 on CUDA.
    width: int | None = None
    # Images are decoded and resized once to input_size x input_size, trained on and embedded
    # at that size. None = the size rule (recsys.vision.recipe): the images' median short side,
    # at most 64 px on a CPU and 224 px on a GPU (Fashion-MNIST: 28).
    input_size: int | None = None
    # Side of the global training views. None = the size rule: 0.7 x input_size (28 -> 20,
    # 64 -> 44, 224 -> 156); smaller views train faster and, since random crops zoom in,
    # embedding at the larger input_size matches object scale (FixRes [Touvron et al. 2019]).
    train_size: int | None = None
    # 1 (grayscale) or 3 (colour); None = 3 when any sampled image has colour, else 1.
    channels: int | None = None
    # Optional local checkpoint to initialise the backbone from (nothing is downloaded).
    weights: str | None = None
    # Embed as the mean of the image's and its mirror image's features (training flips too).
    embed_flip: bool = False
    # Whitening fitted on the training images' own vectors (no labels) [Jegou & Chum 2012]:
    # centre, then scale each principal direction by (variance + whiten_shrink * mean
    # variance) ** (-whiten / 2). 0 = off, 1 = full whitening, 0.5 = square-root, which
    # lifted Fashion-MNIST kNN accuracy by 0.02 and P@10 by 0.01 (benchmarks/RESULTS.md).
    # Needs at least 2 x dims training images; with fewer it is skipped.
    whiten: float = 0.5
    whiten_shrink: float = 0.01
    heads: MethodConfig = field(default_factory=MethodConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ImageEncoderConfig:
        nested = {"heads": MethodConfig, "augment": AugmentConfig, "train": TrainConfig}
        values = {k: v for k, v in d.items() if k not in nested}
        for key, sub in nested.items():
            sub_values = {k: tuple(v) if isinstance(v, list) else v for k, v in d[key].items()}
            values[key] = sub(**sub_values)
        return cls(**values)


def resolve_device(device: str) -> torch.device:
    """``auto`` is the first GPU when one is present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInput(f"device {device!r} asked for, but torch sees no GPU; use --device cpu")
    return torch.device(device)


@torch.no_grad()
def embed_tensor(
    backbone: nn.Module,
    data: torch.Tensor,
    mean,
    std,
    device: torch.device,
    batch_size: int = 1024,
    flip: bool = False,
    show_progress: bool = False,
) -> np.ndarray:
    """L2-normalised float32 features of uint8 (N, C, S, S) images, in batches, no grad.

    With ``flip`` each vector is the mean of the image's and its mirror image's features. On
    CUDA, batches of small images grow to about 16 MB (``embedding_batch``), travel through
    pinned memory on a side stream while the previous batch computes, and vectors come back in
    64 MB blocks while later batches compute (``_HostVectors``).
    """
    batch_size = embedding_batch(batch_size, data.shape[1:], device)
    backbone = backbone.to(device).eval()
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    backbone = backbone.to(memory_format=layout)  # cuDNN's bf16 convolutions want NHWC
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    sink = _HostVectors(len(data), device)
    bar = tqdm(total=len(data), desc="embedding", unit="img", disable=not show_progress)
    for chunk in _device_batches(data, batch_size, device):
        x = (chunk.float() / 255 - mean_t) / std_t  # (b, C, S, S)
        x = x.contiguous(memory_format=layout)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            h = backbone(x)  # (b, D)
            if flip:
                h = (h + backbone(x.flip(-1))) / 2
        sink.add(F.normalize(h.float(), dim=1))
        bar.update(len(chunk))
    bar.close()
    return _finite(sink.result())


def _finite(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` when every one is finite, else ``InvalidInput``: a model from a diverged
    training (``train-images --lr 1e9``) embedded every image as NaN, and embed-images wrote
    them as its L2-normalised vectors."""
    bad = int(np.count_nonzero(~np.isfinite(vectors).all(axis=1)))
    if bad:
        raise InvalidInput(
            f"the image model gives vectors that are not finite numbers for {bad:,} of "
            f"{len(vectors):,} images, as a model whose training diverged does; train it "
            "again with a lower --lr (`recsys train-images`)"
        )
    return vectors


_HELD_FLOATS = 16 * 2**20  # vectors gathered on the GPU per copy back: 64 MB of float32
_BATCH_BYTES = 16 * 2**20  # uint8 images per CUDA batch, so small images are not launch-bound
_MAX_BATCH = 8192


def embedding_batch(batch_size: int, image_shape, device: torch.device) -> int:
    """Images per embedding batch: ``batch_size``, or on CUDA up to 16 MB of uint8 images
    (at most 8,192): 28 px gray images go 8,192 at a time, 224 px colour ones ``batch_size``."""
    if device.type != "cuda":
        return batch_size
    fits = _BATCH_BYTES // max(int(np.prod(image_shape)), 1)
    return max(batch_size, min(fits, _MAX_BATCH))


class _HostVectors:
    """(b, D) vector batches, in order, into one (N, D) float32 host array. On CUDA they gather
    on the device into 64 MB blocks; each block travels into one of two pinned buffers on a side
    stream while later batches compute, and is copied into the array at the next block."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.n, self.out, self.rows = n, None, 0  # rows: sent to the host so far
        self.device = device
        self.held: list[torch.Tensor] = []
        self.held_floats = 0
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.pinned: list[torch.Tensor] = []
        self.turn = 0  # the pinned buffer the next block travels into
        self.pending: tuple[torch.cuda.Event, torch.Tensor, int] | None = None

    def add(self, h: torch.Tensor) -> None:
        if self.out is None:
            self.out = np.empty((self.n, h.shape[1]), np.float32)
        if self.stream is None:
            self.out[self.rows : self.rows + len(h)] = h.numpy()
            self.rows += len(h)
            return
        self.held.append(h)
        self.held_floats += h.numel()
        if self.held_floats >= _HELD_FLOATS:
            self._send()

    def _send(self) -> None:
        block = torch.cat(self.held)  # (m, D) on the device
        self.held, self.held_floats = [], 0
        if not self.pinned or self.pinned[0].numel() < block.numel():
            self._receive()  # the pending block sits in the old buffers
            self.pinned = [torch.empty(block.numel(), pin_memory=True) for _ in range(2)]
        computed = torch.cuda.Event()
        computed.record(torch.cuda.current_stream(self.device))
        buffer = self.pinned[self.turn][: block.numel()].view(block.shape)
        self.turn ^= 1  # the other buffer holds the pending block
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(computed)
            buffer.copy_(block, non_blocking=True)
            block.record_stream(self.stream)
            arrived = torch.cuda.Event()
            arrived.record(self.stream)
        self._receive()  # the previous block, while this one travels
        self.pending = (arrived, buffer, self.rows)
        self.rows += len(block)

    def _receive(self) -> None:
        if self.pending is not None:
            arrived, buffer, start = self.pending
            arrived.synchronize()
            self.out[start : start + len(buffer)] = buffer.numpy()
            self.pending = None

    def result(self) -> np.ndarray:
        if self.held:
            self._send()
        self._receive()
        return self.out if self.out is not None else np.zeros((0, 0), np.float32)


def _device_batches(data: torch.Tensor, batch_size: int, device: torch.device):
    """``data``'s batches on ``device``, in order. On CUDA, batch i + 1 is copied into one of
    two pinned buffers and sent on a side stream while the caller computes batch i."""
    chunks = data.split(batch_size)
    if device.type != "cuda" or data.device.type != "cpu":
        yield from (chunk.to(device) for chunk in chunks)
        return
    stream = torch.cuda.Stream(device)
    shape = (min(batch_size, len(data)), *data.shape[1:])
    pinned = [torch.empty(shape, dtype=data.dtype, pin_memory=True) for _ in range(2)]
    sent: list[torch.cuda.Event | None] = [None, None]  # each buffer's last upload

    def upload(i: int) -> tuple[torch.Tensor, torch.cuda.Event]:
        if sent[i % 2] is not None:
            sent[i % 2].synchronize()  # the buffer's previous upload has left it
        buffer = pinned[i % 2][: len(chunks[i])]
        buffer.copy_(chunks[i])
        with torch.cuda.stream(stream):
            batch = buffer.to(device, non_blocking=True)
            sent[i % 2] = torch.cuda.Event()
            sent[i % 2].record(stream)
        return batch, sent[i % 2]

    following = upload(0) if chunks else None
    compute = torch.cuda.current_stream(device)
    for i in range(len(chunks)):
        batch, arrived = following
        if i + 1 < len(chunks):
            following = upload(i + 1)
        compute.wait_event(arrived)
        batch.record_stream(compute)  # allocated on the side stream, used on this one
        yield batch


Whitening = tuple[np.ndarray, np.ndarray]  # mean (D,), projection (D, D)


def fit_whitening(vectors: np.ndarray, power: float, shrink: float) -> Whitening | None:
    """Mean and projection that (partly) whiten ``vectors`` (N, D); None when off or too few."""
    n, d = vectors.shape
    if power <= 0 or n < 2 * d:
        return None
    mean = vectors.mean(axis=0, dtype=np.float64)  # (D,)
    variance, basis = np.linalg.eigh(np.cov(vectors - mean, rowvar=False))  # (D,), (D, D)
    variance = np.clip(variance, 0.0, None)
    if variance.mean() <= 0:  # every image gave the same vector
        return None
    scale = (variance + shrink * variance.mean()) ** (-power / 2)  # (D,)
    return mean.astype(np.float32), (basis * scale).astype(np.float32)


def apply_whitening(vectors: np.ndarray, whitening: Whitening | None) -> np.ndarray:
    """L2-normalised ``(vectors - mean) @ projection``; ``vectors`` unchanged without one."""
    if whitening is None:
        return vectors
    mean, projection = whitening
    out = (vectors - mean) @ projection  # (N, D)
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out.astype(np.float32, copy=False)


class ImageEncoder(TransformerMixin, BaseEstimator):
    """Self-supervised image encoder (SimCLR, BYOL or DINO) with ``fit`` / ``transform``."""

    def __init__(
        self,
        config: ImageEncoderConfig | None = None,
        device: str = "auto",
        model_dir: str | Path | None = None,
        show_progress: bool = False,
        callback: Callback | None = None,
        cache_dir: str | Path | None = None,
        skip_unreadable: bool = False,
    ) -> None:
        self.config = config
        self.device = device
        self.model_dir = model_dir
        self.show_progress = show_progress
        self.callback = callback
        self.cache_dir = cache_dir
        # A file that cannot be decoded: False raises InvalidInput naming it; True trains on
        # it as a black image and gives it a zero vector (a catalog's training goes on).
        self.skip_unreadable = skip_unreadable

    def resolved_config(self, images: ImageInput) -> ImageEncoderConfig:
        """The config ``fit`` uses for ``images`` on this device: backbone, input and view
        sizes and channels chosen by the size rule where the config leaves them None."""
        cfg = self.config or ImageEncoderConfig()
        device = resolve_device(self.device)
        survey = None
        if cfg.input_size is None or cfg.channels is None:
            survey = survey_images(images, skip_unreadable=self.skip_unreadable)
        input_size = cfg.input_size or input_size_for(survey.side, device.type)
        if not 8 <= input_size <= MAX_INPUT_SIZE:
            raise InvalidInput(
                f"input size {input_size} px is not from 8 to {MAX_INPUT_SIZE:,} px (each "
                "image is decoded to it, and held at it in the cache)"
            )
        backbone = cfg.backbone
        if backbone == "auto":
            backbone = backbone_for(input_size, device.type)
        if cfg.train_size is not None and cfg.train_size > input_size:
            chosen = "--input-size" if cfg.input_size else "the size rule's; --input-size sets it"
            raise InvalidInput(
                f"training views of {cfg.train_size} px (--train-size) are larger than the "
                f"{input_size} px input ({chosen}): views are crops of the input image, so at "
                f"most {input_size} px; give a smaller --train-size or a larger --input-size "
                "(or leave the view size to the size rule)"
            )
        return dataclasses.replace(
            cfg,
            backbone=backbone,
            width=cfg.width or width_for(device.type),
            input_size=input_size,
            train_size=cfg.train_size or view_size_for(input_size, backbone),
            channels=cfg.channels or survey.channels,
            train=dataclasses.replace(
                cfg.train, precision=precision_for(cfg.train.precision, device.type)
            ),
        )

    def _images(self, images: ImageInput) -> torch.Tensor:
        """``images`` as (N, C, S, S) uint8 at the input size; files decoded at most once."""
        return self._decoded_rows(images)[0]

    def _decoded_rows(self, images: ImageInput) -> tuple[torch.Tensor, np.ndarray]:
        """(``_images``, the rows of files that could not be decoded: black, left out with
        ``skip_unreadable``)."""
        cfg = self.config_
        none = np.zeros(0, dtype=np.int64)
        if isinstance(images, np.ndarray | torch.Tensor):
            return as_image_tensor(images, cfg.input_size, cfg.channels), none
        paths = list(images)
        key = cache_key(paths, cfg.input_size, cfg.channels)
        last = getattr(self, "_decoded", None)
        if last is not None and last[0] == key:
            return last[1], last[2]
        unreadable = [] if self.skip_unreadable else None
        data = decoded_images(
            paths, cfg.input_size, cfg.channels, self.cache_dir, self.show_progress, unreadable
        )
        if unreadable:
            log.warning(
                "%d of %d images could not be decoded (first: %s); they get zero vectors",
                len(unreadable),
                len(paths),
                paths[unreadable[0]],
            )
        left_out = np.asarray(unreadable, dtype=np.int64) if unreadable else none
        self._decoded = (key, data, left_out)
        return data, left_out

    def _build_backbone(self) -> nn.Module:
        cfg = self.config_
        backbone = build_backbone(cfg.backbone, cfg.channels, cfg.input_size, cfg.width)
        if cfg.weights:
            load_backbone_weights(backbone, cfg.weights)
        return backbone

    def fit(self, images: ImageInput) -> ImageEncoder:
        """Train on ``images`` (no labels); resumes from ``model_dir``'s checkpoint if any."""
        device = resolve_device(self.device)
        self.device_ = device.type
        self.config_ = cfg = self.resolved_config(images)
        log.info(
            "image encoder on %s: %s %s, %d channel(s), input %d px, training views %d px, %s",
            device.type,
            cfg.method,
            cfg.backbone,
            cfg.channels,
            cfg.input_size,
            cfg.train_size,
            cfg.train.precision,
        )
        data = self._images(images)
        self.mean_, self.std_ = channel_stats(data)
        torch.manual_seed(cfg.train.seed)
        method = build_method(cfg.method, self._build_backbone(), cfg.heads)
        augment = BatchAugment(cfg.augment, cfg.train_size, self.mean_, self.std_)
        checkpoint = None
        if self.model_dir is not None:
            Path(self.model_dir).mkdir(parents=True, exist_ok=True)
            checkpoint = Path(self.model_dir) / CHECKPOINT_FILE
        meta = {"config": cfg.to_dict(), "n_images": len(data)}
        trainer = self._trainer(Trainer(method, augment, cfg.train, device, checkpoint, meta))
        self.train_result_: TrainResult = trainer.fit(data, self.show_progress, self.callback)
        self.backbone_ = method.encoder.to(memory_format=torch.contiguous_format)
        log.info("trained %s: %s", cfg.method, self.train_result_)
        self.whitening_ = None
        if cfg.whiten > 0:
            self.whitening_ = fit_whitening(self._embed(data), cfg.whiten, cfg.whiten_shrink)
        return self

    def _trainer(self, trainer: Trainer) -> Trainer:
        """The trainer ``fit`` runs; a data-parallel worker sets it up for DDP here
        (``recsys.engines.ray_train``)."""
        return trainer

    def _embed(self, data: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
        """Backbone vectors (L2-normalised, before whitening) of uint8 (N, C, S, S) images."""
        device = resolve_device(self.device)
        flip, progress = self.config_.embed_flip, self.show_progress
        return embed_tensor(
            self.backbone_, data, self.mean_, self.std_, device, batch_size, flip, progress
        )

    def transform(self, images: ImageInput, batch_size: int = 1024) -> np.ndarray:
        """(N, D) float32 L2-normalised vectors, one row per image, in input order."""
        check_is_fitted(self, "backbone_")
        data, left_out = self._decoded_rows(images)
        vectors = apply_whitening(self._embed(data, batch_size), self.whitening_)
        vectors[left_out] = 0.0  # no photo, as an item without one
        return vectors

    def save(self, model_dir: str | Path) -> Path:
        """Write ``model.pt`` and ``config.json`` into ``model_dir`` (each atomically)."""
        check_is_fitted(self, "backbone_")
        out = Path(model_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {
            "config": self.config_.to_dict(),
            "backbone": self.backbone_.state_dict(),
            "mean": self.mean_,
            "std": self.std_,
        }
        if self.whitening_ is not None:
            mean, projection = self.whitening_
            state["whiten_mean"] = torch.from_numpy(mean)
            state["whiten_projection"] = torch.from_numpy(projection)
        save_atomic(state, out / MODEL_FILE)
        tmp = out / f".{CONFIG_FILE}.tmp"
        tmp.write_text(json.dumps(state["config"], indent=2) + "\n")
        tmp.replace(out / CONFIG_FILE)
        return out

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto") -> ImageEncoder:
        """A fitted encoder from a directory written by ``save``."""
        path = Path(model_dir) / MODEL_FILE
        if not path.is_file():
            raise InvalidInput(f"{path} not found; train one with `recsys train-images`")
        again = "not a readable image model; train one again with `recsys train-images`"
        state = load_saved(path, ("config", "mean", "std", "backbone"), again)
        config = ImageEncoderConfig.from_dict(state["config"])
        enc = cls(config, device=device)
        enc.config_ = enc.config
        enc.mean_, enc.std_ = state["mean"], state["std"]
        enc.backbone_ = enc._build_backbone_from(state["backbone"])
        enc.whitening_ = None  # models saved before whitening existed have none
        if "whiten_projection" in state:
            enc.whitening_ = (state["whiten_mean"].numpy(), state["whiten_projection"].numpy())
        return enc

    def _build_backbone_from(self, state: dict) -> nn.Module:
        cfg = self.config_
        backbone = build_backbone(cfg.backbone, cfg.channels, cfg.input_size, cfg.width)
        backbone.load_state_dict(state)
        return backbone
