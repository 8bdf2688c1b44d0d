"""A Ray address that cannot work is one line naming the fix, at once: not Ray's traceback,
nor minutes of retries against a port where nothing listens."""

from __future__ import annotations

import socket
import time

import pytest

from recsys.errors import InvalidSettings

ray = pytest.importorskip("ray", reason="the optional Ray extra is not installed (.[ray])")
from recsys.engines.ray_cluster import connect  # noqa: E402


@pytest.fixture(autouse=True)
def not_connected():
    if ray.is_initialized():
        ray.shutdown()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # free again once closed: nothing listens there


@pytest.mark.parametrize("address", ["bogus", "ray://", "http://head:10001", "head:port"])
def test_a_malformed_address_names_the_forms(address):
    with pytest.raises(InvalidSettings, match=r"is not local, auto, ray://HOST:PORT"):
        connect(address)
    assert not ray.is_initialized()


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_address_where_nothing_listens_fails_fast(scheme):
    started = time.perf_counter()
    with pytest.raises(InvalidSettings, match=r"nothing answers at 127\.0\.0\.1:.*ray start"):
        connect(f"{scheme}127.0.0.1:{closed_port()}")
    assert time.perf_counter() - started < 10 and not ray.is_initialized()


def test_recsys_train_says_a_bad_address_before_any_stage(run_cli, engine, monkeypatch):
    """The address was checked at the images or index stage, after reading, the tabular
    block, the weights, ALS and fusion (minutes at scale)."""
    from recsys.model import training
    from tests.shop_fixture import populate

    populate(engine)
    stages = []
    monkeypatch.setattr(training, "read_catalog", lambda *a, **k: stages.append("read"))
    result = run_cli("--ray-address", "bogus", "train", "--quiet", expect_exit=None)
    assert result.exit_code != 0 and "Ray address 'bogus' is not local, auto" in result.output
    assert stages == []
