"""recsys: similar-items and for-you recommendations from a shop's own data."""

__version__ = "0.1.0"
