"""Self-supervised image encoders (SimCLR, BYOL, DINO) trained on the catalog's own images.

The names below are imported on first use (PEP 562), so that ``recsys.vision.photo`` (what
ingest and the service's item writes check photos with) does not import torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_HOMES = {
    "AugmentConfig": "recsys.vision.augment",
    "ImageEncoder": "recsys.vision.encoder",
    "ImageEncoderConfig": "recsys.vision.encoder",
    "MethodConfig": "recsys.vision.methods",
    "TrainConfig": "recsys.vision.train",
}

__all__ = ["AugmentConfig", "ImageEncoder", "ImageEncoderConfig", "MethodConfig", "TrainConfig"]

if TYPE_CHECKING:
    from recsys.vision.augment import AugmentConfig
    from recsys.vision.encoder import ImageEncoder, ImageEncoderConfig
    from recsys.vision.methods import MethodConfig
    from recsys.vision.train import TrainConfig


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
