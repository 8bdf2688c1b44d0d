"""The size rule: at what size a catalog's images are embedded and trained, from the images and
the device. One rule serves `recsys train-images`, `recsys train`'s image stage, `embed-images`
(which reads the sizes saved with the model) and `scripts/eval_image_encoder.py`.

* **input size** (embedding, and the cached decoded images): the images' median short side,
  capped by the device, ``CPU_MAX_SIZE`` (64 px) on a CPU, ``GPU_MAX_SIZE`` (224 px) on a GPU,
  at least ``MIN_SIZE``, rounded down to a multiple of 4. Small images keep their native size
  (Fashion-MNIST: 28 px); a shop's 800 px photos become 64 px on a CPU, 224 px on a GPU.
* **view size** (the random crops training sees): ``VIEW_SCALE`` x the input size, to a
  multiple of 4 (28 -> 20, 64 -> 44, 224 -> 156): crops zoom in, so embedding at the larger
  input size matches object scale (FixRes [Touvron et al. 2019]), and smaller views train
  about twice as fast. A ViT's position embeddings fix one size, so it trains at the input size.
* **channels**: colour (3) when any sampled image has colour, else grayscale (1).
* **backbone** (``auto``): small_cnn on a CPU; on a GPU ResNet-18 from ``RESNET_MIN_SIZE``
  (64 px) up, small_cnn below it: on 28 px Fashion-MNIST small_cnn beat ResNet-18 on the GPU
  in the same 5 minutes (kNN 0.916 against 0.900, benchmarks/RESULTS.md).
* **width** of small_cnn: 32 on a CPU (epochs are what a CPU is short of), 64 on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recsys.errors import InvalidInput
from recsys.vision.photo import DECODE_ERRORS, open_file

CPU_MAX_SIZE = 64  # px; small_cnn trained at 60-90 images/s on 44 px views, 2 shared cores
GPU_MAX_SIZE = 224  # px; the usual ImageNet resolution
MIN_SIZE = 16  # px; small_cnn's last stage is 1/4 of the input
# px; an input side given by hand is at most this: 100,000 px decoded 30 GB per photo (killed)
MAX_INPUT_SIZE = 1024
VIEW_SCALE = 0.7  # view side / input side; 20/28 scored best on Fashion-MNIST
RESNET_MIN_SIZE = 64  # px; on a GPU, ResNet-18 from this input size up, small_cnn below
CPU_WIDTH, GPU_WIDTH = 32, 64  # small_cnn base width (vectors of 8 x width dimensions)
_GRAY_MODES = ("L", "LA", "1", "I", "I;16", "F")


@dataclass(frozen=True)
class ImageSurvey:
    """What a sample of the catalog's images looks like."""

    side: int  # median short side of the sampled images, px
    channels: int  # 3 when any sampled image has colour, else 1
    sampled: int  # images looked at


def _sample(paths: list, n: int) -> list:
    """At most ``n`` items spread evenly over ``paths`` (first and last included)."""
    if len(paths) <= n:
        return paths
    return [paths[int(i)] for i in np.linspace(0, len(paths) - 1, n)]


def _header(path) -> tuple[int, bool]:
    """(short side, has colour) from the file's header; the pixels are not decoded."""
    try:
        with open_file(path) as img:
            return min(img.size), img.mode not in _GRAY_MODES
    except DECODE_ERRORS as exc:
        raise InvalidInput(f"cannot read image {path}: {exc}") from exc


def survey_images(images, sample: int = 256, skip_unreadable: bool = False) -> ImageSurvey:
    """Median short side and colour of ``images`` (file paths or a uint8 array); with
    ``skip_unreadable``, of the sampled files whose headers can be read."""
    if isinstance(images, np.ndarray | torch.Tensor):
        shape = tuple(images.shape)
        colour = len(shape) == 4 and 3 in (shape[1], shape[3])
        spatial = shape[1:3] if len(shape) == 3 or shape[3] in (1, 3) else shape[2:4]
        return ImageSurvey(int(min(spatial)), 3 if colour else 1, shape[0])
    headers, sampled, failed = [], _sample(list(images), sample), []
    for path in sampled:
        try:
            headers.append(_header(Path(path)))
        except InvalidInput as exc:
            if not skip_unreadable:
                raise
            failed.append(exc)
    if not sampled:
        raise InvalidInput("no images given; at least 2 images are needed to train on")
    if not headers:
        missing = [path for path in sampled if not Path(path).is_file()]
        if len(missing) == len(sampled):  # "no images given" said nothing of where they were
            raise InvalidInput(
                f"none of the {len(sampled)} image files looked at exists (e.g. {missing[0]}); "
                "if the catalog's photos moved, ingest the items file again with `recsys "
                "ingest items FILE --images-root DIR` so its paths point at them (a command "
                "given --items takes --images-root itself)"
            )
        raise InvalidInput(
            f"none of the {len(sampled)} images looked at can be read ({failed[0]}); at least "
            "2 readable images are needed to train on"
        )
    sides = [side for side, _ in headers]
    colour = any(c for _, c in headers)
    return ImageSurvey(int(np.median(sides)), 3 if colour else 1, len(headers))


def input_size_for(side: int, device_type: str) -> int:
    """The input size for images whose short side is ``side`` px, on ``cpu`` or ``cuda``."""
    cap = GPU_MAX_SIZE if device_type == "cuda" else CPU_MAX_SIZE
    return max(MIN_SIZE, min(side, cap)) // 4 * 4


def view_size_for(input_size: int, backbone: str) -> int:
    """The training view size for ``input_size`` (a ViT trains at its input size)."""
    if backbone == "vit_tiny":
        return input_size
    return max(8, 4 * round(VIEW_SCALE * input_size / 4))


def backbone_for(input_size: int, device_type: str) -> str:
    """The ``auto`` backbone for ``input_size`` px inputs on ``cpu`` or ``cuda``."""
    if device_type == "cuda" and input_size >= RESNET_MIN_SIZE:
        return "resnet18"
    return "small_cnn"


def width_for(device_type: str) -> int:
    """small_cnn's base width on ``cpu`` or ``cuda``."""
    return GPU_WIDTH if device_type == "cuda" else CPU_WIDTH
