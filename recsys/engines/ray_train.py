"""Self-supervised image training with DDP on Ray Train, and an encoder that uses Ray.

    enc = RayImageEncoder(config, address="local", resources=RayResources(workers=2))
    enc.fit(paths)          # Ray Train: TorchTrainer, one DDP rank per worker
    enc.transform(paths)    # Ray Data: recsys.engines.ray_embed
    enc.save(out)           # the same model.pt as ImageEncoder's; ImageEncoder.load reads it

Each worker runs ``ImageEncoder.fit`` itself (the project's ``Trainer`` and ``BatchAugment``)
on the same decoded images, which the driver decodes once and puts in Ray's object store.
At every step all workers draw one batch of ``workers x batch_size`` images (the permutation
is seeded, so they agree), each trains on its own slice with its own augmentations, and DDP
averages the gradients: the **effective batch is workers x batch_size** and the learning rate
is scaled linearly with it, **lr x workers** (Goyal et al. 2017; DINO's rule for AdamW). An
epoch is n / (workers x batch_size) steps. Losses see the negatives of their own worker's
batch (SimCLR) and batch norm its own worker's images, as each would with ``batch_size``
alone on one machine.

Rank 0 reports a checkpoint through Ray Train every ``CHECKPOINT_EPOCHS`` of steps (the
method, optimiser and step: ``Trainer``'s ``checkpoint.pt``) and at the end the model folder
(``model.pt``, ``config.json``); a run started again with the same storage and name resumes
from the latest one. Ray Train keeps them under ``storage`` (a folder every node can reach,
or ``s3://...``/``gs://...``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recsys.engines.ray_cluster import RayResources, connect, require_ray
from recsys.errors import InvalidInput
from recsys.vision.data import ImageInput, channel_stats
from recsys.vision.encoder import CHECKPOINT_FILE, ImageEncoder, ImageEncoderConfig
from recsys.vision.train import Trainer, TrainResult

log = logging.getLogger(__name__)

# Steps between Ray Train checkpoints, in epochs (decided by step count so all ranks agree).
CHECKPOINT_EPOCHS = 1.0
# Seconds between the Train controller's polls of its workers, unless the environment sets
# RAY_TRAIN_HEALTH_CHECK_INTERVAL_S: Ray's 2 s default made every run end about 5 s after its
# workers had finished (1 s at this value; benchmarks/RESULTS.md, session 30). A poll is one
# small call per worker.
HEALTH_CHECK_S = 0.25


def scaled_config(cfg: ImageEncoderConfig, workers: int) -> ImageEncoderConfig:
    """``cfg`` with the learning rate scaled for ``workers`` x ``batch_size`` per step."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=cfg.train.lr * workers))


class RayImageEncoder(ImageEncoder):
    """``ImageEncoder`` whose ``fit`` trains on Ray Train and whose ``transform`` of image
    files embeds on Ray Data; a fitted one saves and loads exactly as ``ImageEncoder``.

    ``config.train.lr`` is the learning rate of one worker's ``batch_size``; the run uses
    ``lr x workers`` (see the module docstring). ``storage``: where Ray Train keeps
    checkpoints [default: ``model_dir``/ray, else Ray's own default]; with a ``model_dir``
    the run is named so that fitting again resumes it, without one each fit is a new run.
    """

    def __init__(
        self,
        config: ImageEncoderConfig | None = None,
        device: str = "auto",
        model_dir: str | Path | None = None,
        show_progress: bool = False,
        callback=None,
        cache_dir: str | Path | None = None,
        address: str = "local",
        resources: RayResources | None = None,
        storage: str | None = None,
        skip_unreadable: bool = False,
    ) -> None:
        super().__init__(
            config, device, model_dir, show_progress, callback, cache_dir, skip_unreadable
        )
        self.address = address
        self.resources = resources
        self.storage = storage

    def fit(self, images: ImageInput) -> RayImageEncoder:
        """Train on ``images`` with DDP on Ray Train; see the module docstring."""
        connect(self.address)
        res = self.resources or RayResources.for_cluster()
        self.config_ = cfg = self.resolved_config(images)
        if cfg.train.time_budget and res.workers > 1:
            raise InvalidInput(
                "a time budget cannot be shared by several workers (each would stop at its own "
                "step); use --epochs with --workers above 1"
            )
        self.device_ = "cuda" if res.gpus_per_worker > 0 else "cpu"
        data = self._images(images)
        self.mean_, self.std_ = channel_stats(data)
        start = time.perf_counter()
        result = self._trainer_for(data, res).fit()
        self.startup_s_ = time.perf_counter() - start - result.metrics["elapsed"]
        with result.checkpoint.as_directory() as folder:
            trained = ImageEncoder.load(folder, device="cpu")
        # the configuration the workers ran (learning rate scaled), saved with the model
        self.config_, self.backbone_ = trained.config_, trained.backbone_
        self.whitening_ = trained.whitening_
        m = result.metrics
        self.train_result_ = TrainResult(
            m["steps"], m["epochs"], m["elapsed"], m["images_per_s"], m["loss"]
        )
        log.info("trained %s on %d Ray workers: %s", cfg.method, res.workers, self.train_result_)
        return self

    def _trainer_for(self, data: torch.Tensor, res: RayResources):
        ray = require_ray()
        from ray.train import CheckpointConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        # read by the driver when the run starts and handed to its controller
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(HEALTH_CHECK_S))
        threads = res.cpus()
        per_worker = {"CPU": threads, "GPU": res.gpus_per_worker}
        loop_config = {
            "config": scaled_config(self.config_, res.workers).to_dict(),
            "data": ray.put(data.numpy()),
            "threads": threads,
        }
        return TorchTrainer(
            worker_loop,
            train_loop_config=loop_config,
            scaling_config=ScalingConfig(
                num_workers=res.workers,
                use_gpu=res.gpus_per_worker > 0,
                resources_per_worker={k: v for k, v in per_worker.items() if v},
            ),
            run_config=RunConfig(**self._run_names(), checkpoint_config=CheckpointConfig(1)),
        )

    def _run_names(self) -> dict:
        """Ray Train's storage and run name: fixed per model folder, so a rerun resumes."""
        if self.model_dir:
            storage = self.storage or str(Path(self.model_dir, "ray").resolve())
            return {"storage_path": storage, "name": "train-images"}
        return {"storage_path": self.storage, "name": f"images-{time.strftime('%Y%m%d-%H%M%S')}"}

    def transform(self, images: ImageInput, batch_size: int = 1024) -> np.ndarray:
        """Image files are embedded on Ray Data; arrays in this process."""
        if isinstance(images, np.ndarray | torch.Tensor):
            return super().transform(images, batch_size)
        from recsys.engines.ray_embed import embed_files

        connect(self.address)
        res = self.resources or RayResources.for_cluster()
        return embed_files(self, list(images), res, batch_size, self.show_progress)


def ray_image_factory(image, address: str, storage: Path, show_progress: bool = False):
    """``recsys train``'s image stage on Ray: a factory of ``RayImageEncoder`` for the
    ``ImageConfig`` ``image``, with ``RayResources.for_cluster()``; Ray Train's checkpoints
    go to a new run under ``storage`` (the artifacts folder's ``ray``)."""

    def factory() -> RayImageEncoder:
        return RayImageEncoder(
            image.encoder_config(),
            "cpu",
            show_progress=show_progress,
            address=address,
            storage=str(storage),
        )

    return factory


class _DDPTrainer(Trainer):
    """``Trainer`` as rank ``rank`` of ``world``: DDP forward, step-based Ray checkpoints."""

    def setup(self, rank: int, world: int, folder: Path, every: int) -> _DDPTrainer:
        self.rank, self.world, self.folder, self.every = rank, world, folder, every
        if world > 1:
            ids = [self.device.index] if self.cuda else None
            self.forward = torch.nn.parallel.DistributedDataParallel(self.method, device_ids=ids)
        return self

    def save_checkpoint(self) -> None:
        """Ignored: ``fit`` calls it by each rank's own clock, and Ray's reports must line up
        across ranks; ``train_step`` reports by step count instead."""

    def train_step(self, data: torch.Tensor) -> torch.Tensor:
        loss = super().train_step(data)
        if self.step % self.every == 0 and not self.done(len(data)):
            self.last_loss = float(loss)
            self.report()
        return loss

    def report(self, result: TrainResult | None = None) -> None:
        """Every rank reports (Ray Train requires it); rank 0 with the checkpoint folder."""
        from ray import train

        metrics = dataclasses.asdict(result) if result else {"step": self.step}
        if self.rank != 0:
            train.report(metrics)
            return
        Trainer.save_checkpoint(self)
        train.report(metrics, checkpoint=train.Checkpoint.from_directory(self.folder))


class _WorkerEncoder(ImageEncoder):
    """``ImageEncoder.fit`` inside a Ray Train worker (set ``ddp`` before ``fit``)."""

    def _trainer(self, trainer: Trainer) -> Trainer:
        rank, world, every = self.ddp
        meta = {**trainer.meta, "workers": world} if world > 1 else trainer.meta
        ddp = _DDPTrainer(
            trainer.method, trainer.augment, trainer.cfg, trainer.device, trainer.checkpoint, meta
        )
        self.trainer_ = ddp.setup(rank, world, Path(self.model_dir), every)
        return self.trainer_

    def _embed(self, data: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
        if self.ddp[0] != 0:  # only rank 0's model is kept: the others fit no whitening
            return np.zeros((0, 1), dtype=np.float32)
        return super()._embed(data, batch_size)


def worker_loop(config: dict) -> None:
    """One Ray Train worker: ``ImageEncoder.fit`` on the shared images, then the last report."""
    ray = require_ray()
    from ray import train
    from ray.train.torch import get_device

    ctx = train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    data = torch.from_numpy(np.array(ray.get(config["data"])))  # (N, C, S, S) uint8, writable
    cfg = ImageEncoderConfig.from_dict(config["config"])
    with tempfile.TemporaryDirectory(prefix="recsys-train-") as folder:
        _restore(train.get_checkpoint(), Path(folder))
        enc = _WorkerEncoder(cfg, device=str(get_device()), model_dir=folder)
        n = len(data)
        per_epoch = n // (min(cfg.train.batch_size, n // world) * world)
        enc.ddp = (rank, world, max(1, int(per_epoch * CHECKPOINT_EPOCHS)))
        enc.fit(data)
        if rank == 0:
            enc.save(folder)
        log.info("rank %d of %d trained on %d images", rank, world, n)
        enc.trainer_.report(enc.train_result_)


def _restore(checkpoint, folder: Path) -> None:
    """Copy ``checkpoint.pt`` of Ray's latest checkpoint (if any) where ``Trainer`` resumes."""
    if checkpoint is None:
        return
    with checkpoint.as_directory() as found:
        if (Path(found) / CHECKPOINT_FILE).is_file():
            shutil.copy(Path(found) / CHECKPOINT_FILE, folder / CHECKPOINT_FILE)
