"""Click commands, one module per top-level `recsys` subcommand (thin: the work is in recsys/)."""
