"""Public data sets turned into files that `recsys ingest` reads.

- `recsys.datasets.movielens`: `load_movielens()`, `prepare_movielens(out_dir)`.
- `recsys.datasets.fashion_mnist`: `load_fashion_mnist(split)`, `CLASS_NAMES`,
  `prepare_fashion_mnist(out_dir, limit=None, show_progress=True)`.
- `recsys.datasets.fashion_shop`: `prepare_fashion_shop(out_dir, ShopConfig(...))`, a demo shop
  of Fashion-MNIST photos with made-up attributes and SIMULATED shoppers.
- `recsys.datasets.synthetic_shop`: `prepare_synthetic_shop(out_dir, SyntheticShopConfig(...))`,
  a SYNTHETIC long-tail shop of any size (high-cardinality sellers and brands, shoppers whose
  tastes follow them), generated set-wise.
- `recsys.datasets.openmoji`: `prepare_openmoji(out_dir)`, OpenMoji's colour emoji as PNGs with
  their group and subgroup (a colour image benchmark; artwork CC BY-SA 4.0).

Import those modules directly; this package stays light so the CLI starts fast.
"""

from recsys.datasets._io import DatasetUnavailable, PrepareSummary

DATASETS = ("movielens", "fashion-mnist", "fashion-shop", "synthetic-shop", "openmoji")

__all__ = ["DATASETS", "DatasetUnavailable", "PrepareSummary"]
