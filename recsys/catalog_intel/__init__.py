"""Catalog intelligence from item vectors: near-duplicates, outliers, clusters, few-label tags.

Each task is a scikit-learn-style estimator on (N, D) item vectors (image vectors alone or
fused ones); ``fit`` returns self and what it learns ends in ``_``.
"""

from recsys.catalog_intel.clusters import ClusterConfig, Clusterer
from recsys.catalog_intel.duplicates import DuplicateConfig, DuplicateFinder
from recsys.catalog_intel.outliers import OutlierConfig, OutlierScorer
from recsys.catalog_intel.tagging import TagConfig, Tagger

__all__ = [
    "ClusterConfig",
    "Clusterer",
    "DuplicateConfig",
    "DuplicateFinder",
    "OutlierConfig",
    "OutlierScorer",
    "TagConfig",
    "Tagger",
]
