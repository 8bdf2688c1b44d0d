"""Validated, streaming, idempotent ingestion of items and interactions into the catalog."""

from recsys.ingest.interactions import ingest_interactions
from recsys.ingest.items import ingest_items
from recsys.ingest.pipeline import IngestOptions
from recsys.ingest.report import IngestReport, Reason, Reject

__all__ = [
    "IngestOptions",
    "IngestReport",
    "Reason",
    "Reject",
    "ingest_interactions",
    "ingest_items",
]
