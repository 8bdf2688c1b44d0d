"""`recsys serve`: the HTTP service on Flask's development server."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket

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

    if debug and not _loopback(host):  # the debugger runs any code a visitor types
        raise click.BadParameter(
            f"--debug serves Werkzeug's debugger, which runs code for anyone who reaches "
            f"{host}; use --host 127.0.0.1 (or no --debug)",
            param_hint="--host",
        )
    if not os.environ.get("WERKZEUG_RUN_MAIN"):  # the reloader's child: its parent listens
        _check_address(host, port)  # before "serving on": it printed that, then failed
    app = create_app(settings)
    click.echo(f"serving on http://{host}:{port}/  (model {_version(app)})")
    app.run(host=host, port=port, debug=debug, threaded=True, use_reloader=debug)


def _loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (IPv4 or IPv6)."""
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None)}
        return bool(found) and all(ipaddress.ip_address(a).is_loopback for a in found)
    except (OSError, ValueError):
        return False


def _check_address(host: str, port: int) -> None:
    """A one-line error naming --host or --port when the address cannot be listened on."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise click.BadParameter(f"{host!r}: {exc.strerror or exc}", param_hint="--host") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug binds
        try:
            probe.bind(address)
        except OSError as exc:
            hint = "--port" if exc.errno == errno.EADDRINUSE else "--host"
            raise click.BadParameter(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}", param_hint=hint
            ) from None


def _version(app) -> str:
    holder = app.extensions["recsys"].holder
    if holder.ready:
        return holder.state.version
    return f"none: {holder.last_error}" if holder.last_error else "none: run `recsys train`"
