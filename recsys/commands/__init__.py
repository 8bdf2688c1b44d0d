"""Click commands, one module per top-level `recsys` subcommand (thin: the work is in recsys/)."""

import click

# --progress/--no-progress of the commands whose work is long (images, catalog health).
progress_option = click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show progress bars."
)
