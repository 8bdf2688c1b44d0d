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
from datetime import UTC, datetime
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
    # The bundle's photos (``TrainedImages``): an item whose photo is the one the bundle
    # encoded takes its image block row instead of a pass through the image encoder.
    trained: TrainedImages | None = None

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
    def of(cls, recommender, directory: str | Path, read_at: datetime | None = None) -> LiveItems:
        """The parts of a loaded ``Recommender`` (its fused model and image encoder, not a
        second copy) and the tabular encoder of its bundle ``directory``; ``read_at``: when
        its data was read (naive UTC), which lets unchanged photos reuse the bundle's rows."""
        dims = recommender.fused.layout_.dims
        tabular = TabularEncoder.load(directory) if "tabular" in dims else None
        images = None
        if "image" in dims:
            try:
                images = recommender.image_encoder
            except InvalidBundle as exc:  # live items then get no image block
                log.warning("live items of %s get no image vectors: %s", recommender.version, exc)
        trained = None
        if images is not None and read_at is not None:
            trained = TrainedImages.load(directory, recommender, read_at)
        return cls(recommender.fused, tabular, images, trained)

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
            rows = self.trained.rows(items["item_id"], paths) if self.trained else None
            if rows is None or not (rows >= 0).any():
                content["image"] = image_rows(self.image_encoder, paths, width)
                return content, tokens
            reused = rows >= 0
            image = np.zeros((len(items), width), dtype=np.float32)
            image[reused] = self.fused.item_blocks_["image"][rows[reused]]
            if not reused.all():
                image[~reused] = image_rows(self.image_encoder, paths[~reused], width)
            content["image"] = image
        return content, tokens


@dataclass(frozen=True)
class TrainedImages:
    """Each bundle item's photo path as training read it (``items.parquet``'s ``image_path``,
    bundles from this version on) and when it read the catalog: a photo at that path not
    modified since is the one the bundle's image block row was made from."""

    paths: np.ndarray  # (N,) object: bundle row -> photo path, None without one
    item_rows: Any  # ids -> (n,) bundle rows (-1: not in the bundle)
    read_at: float  # POSIX seconds

    @classmethod
    def load(cls, directory: str | Path, recommender, read_at: datetime) -> TrainedImages | None:
        listed = Path(directory) / "items.parquet"
        try:
            items = pd.read_parquet(listed, columns=["item_id", "image_path"])
        except Exception:  # an older bundle, or none listed: every photo is encoded
            return None
        rows = recommender.item_index.rows(items["item_id"].astype(str).tolist())
        paths = np.full(len(recommender.item_ids), None, dtype=object)
        paths[rows[rows >= 0]] = items["image_path"].to_numpy(dtype=object)[rows >= 0]
        when = read_at.replace(tzinfo=UTC).timestamp()
        return cls(paths, recommender.item_index.rows, when)

    def rows(self, item_ids: pd.Series, paths: pd.Series) -> np.ndarray:
        """(n,) the bundle row whose image block row these items' photos have (-1: none)."""
        rows = self.item_rows(item_ids.astype(str).tolist())
        out = np.full(len(rows), -1, dtype=np.int64)
        for k, (row, path) in enumerate(zip(rows.tolist(), paths.tolist(), strict=True)):
            if row >= 0 and isinstance(path, str) and self.paths[row] == path:
                try:
                    unchanged = Path(path).stat().st_mtime < self.read_at
                except OSError:
                    continue  # the encoder says what is wrong with it
                if unchanged:
                    out[k] = row
        return out
