"""Distributed engines for the heavy stages: Ray (images, neighbour table), Spark (events, ALS)."""

import socket

# A cluster's port that does not accept a connection within this is not waited on: Ray and
# Spark themselves retried a dead address for minutes.
REACH_SECONDS = 5.0


def unreachable(host: str, port: int, seconds: float = REACH_SECONDS) -> str | None:
    """Why nothing accepted a TCP connection at ``host``:``port`` within ``seconds``; None
    when something did."""
    try:
        socket.create_connection((host.strip("[]"), port), timeout=seconds).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
