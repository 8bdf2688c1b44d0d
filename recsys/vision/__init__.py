"""Self-supervised image encoders (SimCLR, BYOL, DINO) trained on the catalog's own images."""

from recsys.vision.augment import AugmentConfig
from recsys.vision.encoder import ImageEncoder, ImageEncoderConfig
from recsys.vision.methods import MethodConfig
from recsys.vision.train import TrainConfig

__all__ = ["AugmentConfig", "ImageEncoder", "ImageEncoderConfig", "MethodConfig", "TrainConfig"]
