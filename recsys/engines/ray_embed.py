"""Image embedding on Ray Data: decode and resize in tasks, embed in an actor pool.

    vectors = embed_files(encoder, paths, RayResources(workers=2))  # (N, D), in paths' order

With GPUs the pipeline is ``paths -> decode tasks (1 CPU each) -> encoder actors (1 GPU and
1 CPU each) -> (row, vector)``. On CPUs the actors decode their own blocks (in threads) before
embedding them: actors holding every core would otherwise leave none to the decode tasks, and
pixels need not travel between processes. Decoding is the function the in-process path runs
(``recsys.vision.data.decode_into``); each actor loads the encoder once (its ``model.pt``
travels with the actor's constructor, so the model needs no shared storage; the image files
do) and embeds with ``ImageEncoder.transform``, so the vectors equal the in-process ones. Rows
come back in any order and are put in place by their number.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from recsys.engines.ray_cluster import RayResources, require_ray
from recsys.vision.encoder import MODEL_FILE, ImageEncoder

log = logging.getLogger(__name__)

# Images per Ray Data block (the unit a decode task handles).
DECODE_BLOCK = 2048


def model_bytes(encoder: ImageEncoder) -> bytes:
    """The fitted encoder's ``model.pt``, as written by ``save``."""
    with tempfile.TemporaryDirectory(prefix="recsys-encoder-") as tmp:
        encoder.save(tmp)
        return (Path(tmp) / MODEL_FILE).read_bytes()


def load_model_bytes(model: bytes, device: str) -> ImageEncoder:
    """An encoder from ``model_bytes`` (read with ``ImageEncoder.load``, weights only)."""
    with tempfile.TemporaryDirectory(prefix="recsys-encoder-") as tmp:
        (Path(tmp) / MODEL_FILE).write_bytes(model)
        return ImageEncoder.load(tmp, device=device)


def decode_batch(batch: dict, size: int, channels: int, skip: bool = False) -> dict:
    """Ray Data task: a block of ``path`` -> ``pixels`` (b, C, S, S) uint8 and ``readable``
    (b,) bool, ``row`` kept. A file that cannot be decoded raises, or with ``skip`` is black
    and not readable."""
    from recsys.vision.data import decode_into

    paths = [str(p) for p in batch["path"]]
    failed: list[int] | None = [] if skip else None
    pixels = decode_into(
        np.empty((len(paths), channels, size, size), np.uint8), paths, False, failed
    )
    readable = np.ones(len(paths), dtype=bool)
    readable[failed or []] = False
    return {"row": batch["row"], "pixels": pixels, "readable": readable}


class EncoderActor:
    """Ray Data actor: loads the encoder once, then embeds batches of decoded ``pixels`` (or
    of ``path``, decoded here first)."""

    def __init__(self, model, device: str, threads: int, skip: bool = False) -> None:
        import torch

        self.skip = skip
        ray = require_ray()
        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        torch.set_num_threads(threads)
        self.encoder = load_model_bytes(model, device)

    def __call__(self, batch: dict) -> dict:
        import torch

        if "pixels" not in batch:
            cfg = self.encoder.config_
            batch = decode_batch(batch, cfg.input_size, cfg.channels, self.skip)
        pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"]))  # (b, C, S, S)
        vectors = self.encoder.transform(pixels, batch_size=len(pixels))  # (b, D)
        vectors[~batch["readable"]] = 0.0  # no photo, as in-process
        return {"row": batch["row"], "vector": vectors}


def embed_files(
    encoder: ImageEncoder,
    paths: Sequence[str | Path],
    resources: RayResources,
    batch_size: int = 1024,
    show_progress: bool = False,
) -> np.ndarray:
    """(N, D) float32 vectors of the image files, row i for ``paths[i]``; see the module. A
    file that cannot be decoded raises, or with the encoder's ``skip_unreadable`` gets a zero
    vector, as in-process."""
    skip = encoder.skip_unreadable
    ray = require_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False
    cfg = encoder.config_
    device = "cuda" if resources.gpus_per_worker > 0 else "cpu"
    blank = np.zeros((1, cfg.channels, cfg.input_size, cfg.input_size), np.uint8)
    dim = encoder.transform(blank).shape[1]
    ds = _path_dataset(ray, paths)
    threads = resources.cpus()
    if resources.gpus_per_worker > 0:  # decode in CPU tasks, feed the GPU actors
        ds = ds.map_batches(
            decode_batch,
            fn_kwargs={"size": cfg.input_size, "channels": cfg.channels, "skip": skip},
            batch_size=None,
            batch_format="numpy",
            num_cpus=1,
        )
        threads = resources.cpus_per_worker or 1
    vectors = ds.map_batches(
        EncoderActor,
        fn_constructor_kwargs={
            "model": ray.put(model_bytes(encoder)),
            "device": device,
            "threads": threads,
            "skip": skip,
        },
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=resources.workers,
        num_cpus=threads,
        num_gpus=resources.gpus_per_worker,
    )
    out = np.empty((len(paths), dim), dtype=np.float32)
    left_out = 0
    bar = tqdm(total=len(paths), desc="embedding on Ray", unit="img", disable=not show_progress)
    for batch in vectors.iter_batches(batch_size=None, batch_format="numpy"):
        out[batch["row"]] = batch["vector"]
        left_out += int((~batch["vector"].any(axis=1)).sum())
        bar.update(len(batch["row"]))
    bar.close()
    if left_out:  # the tasks' own warnings name the files, in the workers' logs
        log.warning(
            "%d of %d images could not be decoded; they get zero vectors", left_out, len(paths)
        )
    return out


def _path_dataset(ray, paths: Sequence[str | Path]):
    """A dataset of (row, path), one block per ``DECODE_BLOCK`` images."""
    table = pa.table({"row": np.arange(len(paths)), "path": [str(p) for p in paths]})
    blocks = [table.slice(i, DECODE_BLOCK) for i in range(0, len(paths), DECODE_BLOCK)]
    return ray.data.from_arrow(blocks)
