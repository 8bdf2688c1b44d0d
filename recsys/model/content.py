"""The blocks a fused model is made of, each built in one place: the content blocks (tabular
attributes and titles, image vectors) and the collaborative model.

`recsys train` and the evaluation's contenders (content only, fused) call these same builders
with the same ``TrainConfig``, so what is evaluated is what is trained.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.model.cf import CFConfig, CollaborativeModel, Confidence
from recsys.model.config import TrainConfig
from recsys.model.data import CatalogData
from recsys.model.tabular import TabularEncoder

log = logging.getLogger(__name__)


@dataclass
class Content:
    """Item content blocks (block name -> (I, D), catalog order), the sparse attribute and
    title tokens behind the tabular block (I, F), and their fitted encoders."""

    blocks: dict[str, np.ndarray] = field(default_factory=dict)
    tokens: sp.csr_matrix | None = None
    tabular: TabularEncoder | None = None
    image_encoder: Any = None


def build_content(
    data: CatalogData,
    config: TrainConfig,
    device: str = "cpu",
    show_progress: bool = False,
    image_encoder_factory: Callable[[], Any] | None = None,
) -> Content:
    """Both content blocks the catalog allows: ``image_block`` then ``tabular_block``."""
    content = Content()
    image_block(content, data, config, device, show_progress, image_encoder_factory)
    tabular_block(content, data, config)
    return content


# Fewer photos than this and training leaves the image block out: self-supervised training
# contrasts photos with each other.
MIN_IMAGES = 2


def image_block(
    content: Content,
    data: CatalogData,
    config: TrainConfig,
    device: str = "cpu",
    show_progress: bool = False,
    image_encoder_factory: Callable[[], Any] | None = None,
) -> None:
    """Train the image encoder on every catalog image (no labels, no interactions) and add its
    vectors as the ``image`` block (zero rows for items without an image)."""
    paths = data.items["image_path"]
    has = paths.notna().to_numpy()
    if not has.any():
        log.info("no item images: training without an image block")
        return
    if has.sum() < MIN_IMAGES:  # a shop adding its first photos
        log.warning(
            "only %d item has a photo: training without an image block (the image encoder "
            "learns from at least %d)",
            has.sum(),
            MIN_IMAGES,
        )
        return
    factory = image_encoder_factory or _default_image_encoder(config, device, show_progress)
    # Torch's CPU kernels share OpenMP with OpenBLAS: lift a caller's one-thread BLAS limit,
    # which would halve their speed on 2 cores.
    with threadpool_limits(_torch_threads()):
        encoder = factory().fit(paths[has].tolist())
        content.blocks["image"] = image_rows(encoder, paths)
    content.image_encoder = encoder


def image_rows(encoder, paths: pd.Series, width: int | None = None) -> np.ndarray:
    """(N, D) float32 vectors of a fitted image ``encoder`` for ``paths`` (N,), zero rows
    where an item has no image; ``width`` is D when no item has one."""
    has = paths.notna().to_numpy()
    if not has.any():
        return np.zeros((len(paths), width or 0), dtype=np.float32)
    vectors = np.asarray(encoder.transform(paths[has].tolist()), dtype=np.float32)
    image = np.zeros((len(paths), vectors.shape[1]), dtype=np.float32)
    image[has] = vectors
    return image


def _default_image_encoder(config: TrainConfig, device: str, show_progress: bool):
    from recsys.vision import ImageEncoder

    def factory():
        # one unreadable photo must not stop a catalog's training: it is left out (a warning
        # names it) and its item has no image vector, as an item without a photo
        config_ = config.image.encoder_config()
        return ImageEncoder(config_, device, show_progress=show_progress, skip_unreadable=True)

    return factory


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def tabular_block(content: Content, data: CatalogData, config: TrainConfig) -> None:
    """The ``tabular`` block: the catalog's attributes, plus the title as text, its features
    weighted by how alike their items' images are when the image block is built
    (``TabularConfig.view_weight``)."""
    kinds = dict(data.kinds)
    if config.use_titles and data.items["title"].notna().any() and "title" not in kinds:
        kinds["title"] = "text"
    if not kinds:
        log.info("no item attributes: training without a tabular block")
        return
    encoder = TabularEncoder(kinds, config.tabular)
    tokens = encoder.fit_transform_sparse(data.items, view=content.blocks.get("image"))
    if encoder.dim_:
        content.tabular, content.tokens = encoder, tokens
        content.blocks["tabular"] = encoder.project(tokens)


def build_collaborative(
    interactions: pd.DataFrame,
    item_ids: np.ndarray,
    config: CFConfig,
    use_gpu: bool = False,
    show_progress: bool = False,
    confidence: Confidence | None = None,
    recency: float | None = None,
) -> CollaborativeModel | None:
    """ALS or BPR over the interactions, one row per catalog item; None without interactions.
    ``confidence``: ALS's confidence form (None: the config's); ``recency``: the half-life in
    events of the users' recency weights (``CollaborativeModel.fit``; None: none)."""
    if interactions.empty:
        log.info("no interactions: training without a collaborative block")
        return None
    model = CollaborativeModel(config, use_gpu=use_gpu)
    return model.fit(interactions, item_ids, show_progress, confidence, recency)
