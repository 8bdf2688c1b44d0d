"""Ray is optional: without it every command runs in-process, and asking for it says what to
install (issue 20). Runs whether or not Ray is installed."""

from __future__ import annotations

import sys

import pytest

from recsys.errors import InvalidSettings


@pytest.fixture
def no_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed


def test_asking_for_ray_without_it_says_what_to_install(no_ray):
    from recsys.engines.ray_cluster import connect

    with pytest.raises(InvalidSettings, match=r'pip install -e "\.\[ray\]"'):
        connect("local")


def test_the_cli_says_so_too(no_ray, run_cli, tmp_path):
    (tmp_path / "items.csv").write_text("item_id,image\nsku1,a.png\n")
    result = run_cli(
        "--ray-address", "local", "embed-images", "--model", tmp_path,
        "--items", tmp_path / "items.csv", "--out", tmp_path / "v.npy", expect_exit=2,
    )  # fmt: skip
    assert "not installed" in result.output and ".[ray]" in result.output


def test_without_an_address_nothing_asks_for_ray(no_ray, monkeypatch):
    from recsys.settings import Settings

    monkeypatch.delenv("RECSYS_RAY_ADDRESS", raising=False)
    assert Settings.load().ray_address == ""
    assert Settings.load({"RECSYS_RAY_ADDRESS": "auto"}).ray_address == "auto"
