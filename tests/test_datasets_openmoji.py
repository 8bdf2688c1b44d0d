"""`recsys datasets prepare openmoji` on a tiny package written here (no network)."""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from recsys.datasets import DatasetUnavailable
from recsys.datasets import openmoji as openmoji_module
from recsys.datasets.openmoji import OpenMojiSource, prepare_openmoji

needs_rsvg = pytest.mark.skipif(
    shutil.which("rsvg-convert") is None, reason="needs rsvg-convert (apt-get install librsvg2-bin)"
)

_SVG = (
    '<svg viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg">'
    '<circle cx="36" cy="36" r="23" fill="{fill}"/></svg>'
)
_EMOJI = [  # hexcode, group, subgroup, skin tone, fill
    ("1F600", "smileys-emotion", "face-smiling", "", "#FCEA2B"),
    ("1F34E", "food-drink", "food-fruit", "", "#EA5A47"),
    ("1F476", "people-body", "person", "", "#A57939"),
    ("1F476-1F3FD", "people-body", "person", 3, "#A57939"),  # a skin-tone variant: left out
]


@pytest.fixture
def package(tmp_path):
    """An unpacked npm package: data/openmoji.json and color/svg/<hexcode>.svg."""
    root = tmp_path / "pkg" / "package"
    (root / "data").mkdir(parents=True)
    (root / "color" / "svg").mkdir(parents=True)
    rows = []
    for hexcode, group, subgroup, tone, fill in _EMOJI:
        rows.append(
            {"hexcode": hexcode, "group": group, "subgroups": subgroup, "skintone": tone,
             "annotation": f"emoji {hexcode}"}
        )  # fmt: skip
        (root / "color" / "svg" / f"{hexcode}.svg").write_text(_SVG.format(fill=fill))
    (root / "data" / "openmoji.json").write_text(json.dumps(rows))
    return root


@needs_rsvg
def test_prepare_writes_colour_pngs_items_labels_and_the_credit(package, tmp_path):
    out = tmp_path / "out"
    summary = prepare_openmoji(out, OpenMojiSource(local_dir=package), show_progress=False)
    assert summary.counts == {"images": 3, "groups": 3, "subgroups": 3}
    items = pd.read_csv(out / "items.csv")
    labels = pd.read_csv(out / "labels.csv")
    assert list(items["item_id"]) == ["openmoji-1F34E", "openmoji-1F476", "openmoji-1F600"]
    assert list(labels["group"]) == ["food-drink", "people-body", "smileys-emotion"]
    with Image.open(out / items["image"][0]) as img:
        assert (img.mode, img.size) == ("RGB", (72, 72))
        pixels = np.asarray(img)
    assert (pixels[0, 0] == 255).all()  # white background
    assert tuple(pixels[36, 36]) == pytest.approx((0xEA, 0x5A, 0x47), abs=2)  # the apple's red
    assert "CC BY-SA 4.0" in (out / "CREDIT.txt").read_text()


@needs_rsvg
def test_the_cli_reads_a_folder_holding_the_npm_tarball(package, run_cli, tmp_path):
    folder = tmp_path / "tarball"
    folder.mkdir()
    with tarfile.open(folder / "openmoji-17.0.0.tgz", "w:gz") as tar:
        tar.add(package, arcname="package")
    out = tmp_path / "out"
    result = run_cli(
        "datasets", "prepare", "openmoji", "--out", out, "--data-dir", folder,
        "--cache-dir", tmp_path / "cache", "-q",
    )  # fmt: skip
    assert "3 images, 3 groups, 3 subgroups" in result.output
    assert len(list((out / "images").glob("*.png"))) == 3


def test_without_npm_and_without_a_local_copy_the_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(openmoji_module.shutil, "which", lambda name: None)
    with pytest.raises(DatasetUnavailable, match=r"npm is not installed.*--data-dir"):
        prepare_openmoji(tmp_path / "out", OpenMojiSource(cache_dir=tmp_path / "cache"))


def test_a_folder_without_the_package_is_refused(run_cli, tmp_path):
    result = run_cli(
        "datasets", "prepare", "openmoji", "--out", tmp_path / "out", "--data-dir", tmp_path,
        expect_exit=None,
    )  # fmt: skip
    assert result.exit_code != 0 and "openmoji-*.tgz" in result.output
