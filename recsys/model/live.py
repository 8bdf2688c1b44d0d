"""Vectors for listings a bundle has never seen, from the bundle's own fitted parts.

A shop lists new products all day; retraining for each is out of the question. A new (or
changed) item gets the fused vector that `recsys train` would have given it had it been in
the catalog without interactions: its tabular block from the bundle's fitted tabular encoder
(values the encoder never saw add nothing, as ``TabularEncoder`` documents), its image block
from the bundle's image encoder (whitening included), its collaborative and popularity blocks
predicted from that content by the bundle's cold-item predictor, and the bundle's cold-item
multipliers on top (``FusedModel.cold_item_vectors``).

    live = LiveItems.load(bundle_dir)  # or LiveItems.of(recommender, bundle_dir)
    vectors = live.vectors(items)  # (n, dim) float32, rows in items' order
    blocks = live.blocks(items)  # block -> (n, d), unweighted (recsys.model.delta uses both)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.errors import InvalidBundle
from recsys.model.content import image_rows
from recsys.model.fusion import FusedModel, normalize_rows
from recsys.model.tabular import TabularEncoder

log = logging.getLogger(__name__)


@dataclass
class LiveItems:
    """A bundle's fitted parts that turn item rows into fused item vectors."""

    fused: FusedModel
    tabular: TabularEncoder | None = None
    image_encoder: Any = None  # recsys.vision.ImageEncoder, or None without an image block

    @classmethod
    def load(cls, directory: str | Path, fused: FusedModel | None = None) -> LiveItems:
        """The parts of the bundle in ``directory`` (``fused``: its already loaded model)."""
        directory = Path(directory)
        fused = fused or FusedModel.load(directory)
        dims = fused.layout_.dims
        tabular = TabularEncoder.load(directory) if "tabular" in dims else None
        image_encoder = None
        if "image" in dims:
            from recsys.vision import ImageEncoder

            image_encoder = ImageEncoder.load(directory / "image_encoder", device="cpu")
        return cls(fused, tabular, image_encoder)

    @classmethod
    def of(cls, recommender, directory: str | Path) -> LiveItems:
        """The parts of a loaded ``Recommender`` (its fused model and image encoder, not a
        second copy) and the tabular encoder of its bundle ``directory``."""
        dims = recommender.fused.layout_.dims
        tabular = TabularEncoder.load(directory) if "tabular" in dims else None
        images = None
        if "image" in dims:
            try:
                images = recommender.image_encoder
            except InvalidBundle as exc:  # live items then get no image block
                log.warning("live items of %s get no image vectors: %s", recommender.version, exc)
        return cls(recommender.fused, tabular, images)

    @property
    def parts(self) -> str:
        """The parts that make these items' content blocks, e.g. "tabular+image"."""
        return (
            "+".join(
                name
                for name, part in (("tabular", self.tabular), ("image", self.image_encoder))
                if part is not None
            )
            or "none"
        )

    def vectors(self, items: pd.DataFrame) -> np.ndarray:
        """(n, dim) fused vectors of ``items`` (the catalog's item columns: attributes,
        ``title``, ``image_path``), as a bundle trained with them but no interactions on them
        would hold them."""
        content, tokens = self._content(items)
        if not content:
            return np.zeros((len(items), self.fused.layout_.dim), dtype=np.float32)
        return self.fused.cold_item_vectors(content, tokens)

    def blocks(self, items: pd.DataFrame) -> tuple[dict[str, np.ndarray], sp.csr_matrix | None]:
        """The unweighted blocks behind ``vectors`` (block -> (n, d);
        ``FusedModel.cold_item_blocks``; empty when the bundle has no content block) and the
        items' unit-norm attribute and title tokens (n, F), as the bundle's
        ``FusedModel.item_tokens_`` holds its items' (None when it holds none)."""
        content, tokens = self._content(items)
        blocks = self.fused.cold_item_blocks(content, tokens) if content else {}
        if tokens is None or not self.fused.has_tokens:
            return blocks, None
        return blocks, normalize_rows(tokens)

    def _content(self, items: pd.DataFrame):
        content: dict[str, np.ndarray] = {}
        tokens = None
        if self.tabular is not None:
            tokens = self.tabular.transform_sparse(items)
            content["tabular"] = self.tabular.project(tokens)
        if self.image_encoder is not None:
            paths = items.get("image_path", pd.Series([None] * len(items), dtype=object))
            width = self.fused.layout_.dims["image"]
            content["image"] = image_rows(self.image_encoder, paths, width)
        return content, tokens
