"""One training loop for every method: warm-up + cosine schedule, checkpoints, resume.

Batches are slices of one uint8 tensor on the training device, augmented there as a whole
(``BatchAugment``). Tensors are channels_last on every device (on a 2-core CPU oneDNN's
convolutions run 15-30% faster that way). The forward runs under bf16 autocast on CUDA and on
CPUs with bf16 matrix units (Intel AMX): ``precision_for``.
Randomness is derived from ``(seed, epoch)`` and ``(seed, step)``, so a resumed run draws the
same batches and views as an uninterrupted one, and CPU runs are deterministic.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from recsys.errors import InvalidInput, TrainingDiverged
from recsys.vision.augment import BatchAugment

log = logging.getLogger(__name__)

Callback = Callable[[int, float, float], None]  # (epoch, elapsed seconds, loss)


@dataclass(frozen=True)
class TrainConfig:
    # Passes over the data; ignored when time_budget is set.
    epochs: int = 10
    # Train for this many seconds instead (the schedule follows elapsed time).
    time_budget: float | None = None
    # Source images per step (each gives two or more views).
    batch_size: int = 256
    # AdamW peak learning rate and weight decay (no decay on biases and norm layers).
    lr: float = 2e-3
    weight_decay: float = 0.05
    # Linear warm-up as a fraction of the run, then cosine decay to lr * min_lr_ratio.
    warmup: float = 0.05
    min_lr_ratio: float = 0.01
    # Seed of the initialisation, the batch order and the augmentation parameters.
    seed: int = 0
    # Seconds between checkpoints (and one at the end).
    checkpoint_every: float = 60.0
    # Forward-pass precision: bf16 (autocast; weights, gradients and the optimiser stay fp32),
    # fp32, or auto = bf16 on CUDA and on CPUs with bf16 in hardware (AMX, AVX-512 BF16),
    # fp32 elsewhere (``precision_for``).
    precision: str = "auto"


@dataclass(frozen=True)
class TrainResult:
    steps: int
    epochs: float
    elapsed: float  # seconds spent training, resumed runs included
    images_per_s: float  # source images (not views) per second of this run
    loss: float


PRECISIONS = ("auto", "bf16", "fp32")


def precision_for(precision: str, device_type: str) -> str:
    """``bf16`` or ``fp32`` for ``precision`` on ``cpu`` or ``cuda``.

    ``auto`` is bf16 on CUDA, and on a CPU only where it computes bf16 products in hardware:
    AMX tile units (Intel Sapphire Rapids and later) or AVX-512 BF16 instructions (AMD Zen 4
    and later, Intel Cooper Lake). With AMX SimCLR small_cnn trained 1.55x (Fashion-MNIST) to
    1.64x (OpenMoji) more images per second than in fp32 on 2 cores, and as well per epoch
    (benchmarks/RESULTS.md, session 13); with AVX-512 BF16 on a Zen 4 EPYC, 1.58x on
    Fashion-MNIST (session 34). Without either, bf16 is emulated and slower.
    """
    if precision not in PRECISIONS:
        raise InvalidInput(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device_type == "cuda":
        return "bf16"
    capabilities = getattr(torch.cpu, "get_capabilities", dict)()
    native = capabilities.get("amx_bf16") or capabilities.get("avx512_bf16")
    return "bf16" if device_type == "cpu" and native else "fp32"


def lr_factor(progress: float, cfg: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine to ``min_lr_ratio``; ``progress`` in [0, 1]."""
    if progress < cfg.warmup:
        return max(progress / cfg.warmup, 1e-3)
    t = min((progress - cfg.warmup) / max(1 - cfg.warmup, 1e-8), 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * (1 + math.cos(math.pi * t)) / 2


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay}]
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=0.0)


def _generator(seed: int, stream: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + stream) * 1_000_000_007 + index)


@functools.lru_cache(maxsize=2)
def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=_generator(seed, 1, epoch))


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of batch ``step``: a fresh permutation every epoch, last partial batch dropped."""
    epoch, pos = divmod(step, n // batch_size)
    return _epoch_permutation(n, seed, epoch)[pos * batch_size : (pos + 1) * batch_size]


def save_atomic(obj: object, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_saved(path: Path, keys: tuple[str, ...], damaged: str, map_location="cpu") -> dict:
    """What ``save_atomic`` wrote, read as weights only; ``InvalidInput`` naming ``path`` and
    ``damaged`` (what to do) when it cannot be read or lacks one of ``keys``: a damaged copy,
    for which torch's own message advises ``weights_only=False``, which would run its contents."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
        for key in keys:
            state[key]
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{path} cannot be read ({type(exc).__name__}): {damaged}") from None
    return state


class Trainer:
    """Trains ``method`` on ``data`` (N, C, S, S) uint8; see ``fit``.

    Data-parallel (``recsys.engines.ray_train``): worker ``rank`` of ``world`` sets those and
    ``forward`` (``method`` wrapped in DDP); each step draws one batch of ``world`` x
    ``batch_size`` images and the worker trains on its slice, with its own augmentations.
    """

    def __init__(
        self,
        method: nn.Module,
        augment: BatchAugment,
        cfg: TrainConfig,
        device: torch.device,
        checkpoint: Path | None = None,
        meta: dict | None = None,
    ) -> None:
        self.method = method.to(device)
        self.augment = augment
        self.cfg = cfg
        self.device = device
        self.checkpoint = checkpoint
        self.meta = meta or {}  # saved with checkpoints; a resume must match it
        self.optimizer = make_optimizer(self.method, cfg)
        self.step = 0
        self.elapsed = 0.0
        self.last_loss = float("nan")
        self.n_images = 0  # what ``fit`` trains on
        self.cuda = device.type == "cuda"
        self.precision = precision_for(cfg.precision, device.type)
        self.method.to(memory_format=torch.channels_last)
        self.rank, self.world, self.forward = 0, 1, self.method

    def total_steps(self, n: int) -> int | None:
        """Steps of ``cfg.epochs`` passes (None: a time budget), a pass being the whole
        batches nearest to ``n`` images: 500 images in batches of 256 are 2 steps a pass (one
        batch of each fresh permutation, ``batch_indices``), not 1, which would see each image
        half as often as asked."""
        if self.cfg.time_budget:
            return None
        return self.cfg.epochs * max(1, round(n / self.global_batch(n)))

    def batch_size(self, n: int) -> int:
        """Images per step on this worker."""
        if n < 2 * self.world:
            raise InvalidInput(f"self-supervised training needs at least 2 images, got {n}")
        return min(self.cfg.batch_size, n // self.world)

    def global_batch(self, n: int) -> int:
        """Images per step on all workers together."""
        return self.batch_size(n) * self.world

    def progress(self, n: int) -> float:
        total = self.total_steps(n)
        return self.step / total if total else self.elapsed / self.cfg.time_budget

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, data: torch.Tensor) -> torch.Tensor:
        """One optimiser step on the next batch; returns the (detached) loss."""
        n, cfg = len(data), self.cfg
        bs, rank = self.batch_size(n), self.rank
        idx = batch_indices(n, bs * self.world, self.step, cfg.seed)[rank * bs : (rank + 1) * bs]
        x = data[idx.to(self.device)].float().div_(255)  # (B, C, S, S)
        views = self.augment.views(x, _generator(cfg.seed, 2 + 1000 * rank, self.step))
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(self.progress(n), cfg)
        with self._autocast():
            loss = self.forward(views)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        self.method.step_end(self.progress(n))
        return loss.detach()

    def done(self, n: int) -> bool:
        total = self.total_steps(n)
        return self.step >= total if total else self.elapsed >= self.cfg.time_budget

    def fit(
        self, data: torch.Tensor, show_progress: bool = False, callback: Callback | None = None
    ) -> TrainResult:
        """Train until the epochs or the time budget are spent, resuming from the checkpoint."""
        data = data.to(self.device)
        self.resume()
        self.method.train()
        n, bs = len(data), self.global_batch(len(data))
        start = (self.step, self.elapsed)
        bar = self._bar(n, show_progress)
        last_ckpt, t0 = time.monotonic(), time.monotonic() - self.elapsed
        self.n_images = n
        while not self.done(n):
            loss = self.train_step(data)
            self.elapsed = time.monotonic() - t0
            if self.step % 10 == 0 or self.step % (n // bs) == 0 or self.done(n):
                self.last_loss = float(loss)
                self.check_loss(self.last_loss)
                self._report(bar, self.last_loss, n, start, callback)
            if time.monotonic() - last_ckpt > self.cfg.checkpoint_every:
                self.save_checkpoint()
                last_ckpt = time.monotonic()
        bar.close()
        self.check_weights()
        self.save_checkpoint()
        rate = self._rate(n, start)
        return TrainResult(self.step, self.step * bs / n, self.elapsed, rate, self.last_loss)

    def check_loss(self, loss: float) -> None:
        """``TrainingDiverged`` when the loss is NaN or infinite (``train-images --lr 1e9``
        went on to save a model whose every vector was NaN, exit 0)."""
        if not math.isfinite(loss):
            self._diverged(f"the loss is {loss}")

    def check_weights(self) -> None:
        """``TrainingDiverged`` when a weight is NaN or infinite: checked before a checkpoint
        or a model keeps them, as the loss is read only every few steps."""
        state = self.method.state_dict().values()
        if not all(torch.isfinite(t).all() for t in state if t.is_floating_point()):
            self._diverged("the weights are no longer finite numbers")

    def _diverged(self, what: str) -> None:
        total, cfg = self.total_steps(self.n_images), self.cfg
        if total is None:
            where = f"step {self.step} ({self.elapsed:.0f} s of the {cfg.time_budget:g} s budget)"
        else:
            epoch = math.ceil(self.step * cfg.epochs / total)
            where = f"step {self.step} of {total} (epoch {epoch} of {cfg.epochs})"
        raise TrainingDiverged(
            f"image training diverged at {where}: {what}; train again with a lower learning "
            f"rate (--lr) than {cfg.lr:g}; this run's model was not saved"
        )

    def _rate(self, n: int, start: tuple[int, float]) -> float:
        """Source images per second since ``start`` (step, elapsed)."""
        images = (self.step - start[0]) * self.global_batch(n)
        return images / max(self.elapsed - start[1], 1e-9)

    def _position(self, n: int) -> int:
        return self.step if self.total_steps(n) else int(self.elapsed)

    def _bar(self, n: int, show_progress: bool) -> tqdm:
        total = self.total_steps(n) or int(self.cfg.time_budget)
        unit = "step" if self.total_steps(n) else "s"
        desc = f"training on {self.augment.size}px views"
        return tqdm(
            total=total, initial=self._position(n), unit=unit, desc=desc, disable=not show_progress
        )

    def _report(self, bar: tqdm, loss: float, n: int, start, callback: Callback | None) -> None:
        """Update the bar (reading the loss syncs the GPU, so not every step); epoch callback."""
        bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{self._rate(n, start):.0f}", refresh=False)
        bar.update(min(self._position(n), bar.total) - bar.n)
        per_epoch = n // self.global_batch(n)
        if callback is not None and self.step % per_epoch == 0:
            callback(self.step // per_epoch, self.elapsed, loss)

    def save_checkpoint(self) -> None:
        if self.checkpoint is None:
            return
        self.check_weights()
        state = {
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            "loss": self.last_loss,
            "meta": self.meta,
        }
        save_atomic(state, self.checkpoint)

    def resume(self) -> None:
        """Continue from ``checkpoint`` when it exists and was written by the same setup."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return
        state = load_saved(
            self.checkpoint, ("meta",), "a damaged copy; delete it to start over", self.device
        )
        if state["meta"] != self.meta:
            raise InvalidInput(
                f"{self.checkpoint} was written by a different setup; use another output "
                "directory, or delete the checkpoint to start over"
            )
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.elapsed, self.last_loss = state["step"], state["elapsed"], state["loss"]
        log.info(
            "resuming from %s at step %d (%.0f s trained)", self.checkpoint, self.step, self.elapsed
        )
