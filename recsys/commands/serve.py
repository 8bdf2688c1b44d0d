"""`recsys serve`: the HTTP service on Flask's development server."""

from __future__ import annotations

import click

from recsys.settings import Settings


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on.",
)
@click.option(
    "--debug", is_flag=True, help="Flask debug mode (reloader, debugger): never in production."
)
@click.pass_obj
def serve(settings: Settings, host: str, port: int, debug: bool) -> None:
    """Serve the API and web page for development (http://HOST:PORT/).

    Loads the catalog and its active model bundle. In production run gunicorn instead:

    \b
      gunicorn -c services/gunicorn.conf.py "services.app:create_app()"
    """
    from services.app import create_app

    app = create_app(settings)
    click.echo(f"serving on http://{host}:{port}/  (model {_version(app)})")
    app.run(host=host, port=port, debug=debug, threaded=True, use_reloader=debug)


def _version(app) -> str:
    holder = app.extensions["recsys"].holder
    return holder.state.version if holder.ready else "none: run `recsys train`"
