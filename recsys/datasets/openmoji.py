"""OpenMoji as a colour image benchmark: emoji PNGs plus their group and subgroup.

OpenMoji (openmoji.org, HfG Schwäbisch Gmünd; artwork under CC BY-SA 4.0) ships each emoji as
an SVG drawn on a 72x72 grid, with its Unicode group (``food-drink``) and subgroup
(``food-fruit``) in ``data/openmoji.json``. The package comes from the npm registry
(``npm pack openmoji@VERSION``, 4 MB, once into a cache folder) unless a local copy is given.
The SVGs are rasterised by librsvg (``rsvg-convert``, Debian package ``librsvg2-bin``) onto
white. Skin-tone variants are left out: each is its base emoji in another skin colour, which
would make same-group retrieval trivially easy.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from recsys.datasets._io import (
    DatasetUnavailable,
    PrepareSummary,
    atomic_dir,
    ensure_out_dir,
    write_csv,
)
from recsys.errors import InvalidInput

log = logging.getLogger(__name__)

VERSION = "17.0.0"  # the npm package version prepared by default
SIDE = 72  # px; OpenMoji's design grid
DATA_FILE = Path("data") / "openmoji.json"
CREDIT = (
    "Emoji artwork: OpenMoji (https://openmoji.org), the open-source emoji and icon project "
    "of HfG Schwäbisch Gmünd, licensed under CC BY-SA 4.0 "
    "(https://creativecommons.org/licenses/by-sa/4.0/). The PNGs here are rasterised from its "
    "SVGs, unchanged otherwise, and are shared under the same licence.\n"
)


@dataclass(frozen=True)
class OpenMojiSource:
    """Where the npm package comes from."""

    # An unpacked package (the folder holding data/openmoji.json, e.g. node_modules/openmoji)
    # or a folder holding openmoji-*.tgz; None = the cache, filled by `npm pack`.
    local_dir: Path | None = None
    # Where `npm pack` downloads and unpacks the package.
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache/recsys/openmoji")
    # npm package version.
    version: str = VERSION


def _unpack(tgz: Path, dest: Path) -> Path:
    """Unpack an npm tarball (its files sit under ``package/``) into ``dest``."""
    with tarfile.open(tgz) as tar:
        tar.extractall(dest, filter="data")
    return dest / "package"


def _npm_pack(source: OpenMojiSource) -> Path:
    """``npm pack openmoji@VERSION`` into the cache folder; the tarball's path."""
    npm = shutil.which("npm")
    if npm is None:
        raise DatasetUnavailable(
            "npm is not installed, so the openmoji package cannot be fetched: install npm "
            "(Debian: apt-get install npm), or pass --data-dir with an unpacked openmoji "
            "package (npm pack openmoji && tar xzf openmoji-*.tgz)"
        )
    source.cache_dir.mkdir(parents=True, exist_ok=True)
    spec = f"openmoji@{source.version}"
    log.info("fetching %s with npm into %s", spec, source.cache_dir)
    cmd = [npm, "pack", spec, "--silent", "--pack-destination", str(source.cache_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    tgz = source.cache_dir / f"openmoji-{source.version}.tgz"
    if done.returncode != 0 or not tgz.is_file():
        raise DatasetUnavailable(f"`npm pack {spec}` failed: {done.stderr.strip()[-500:]}")
    return tgz


def package_dir(source: OpenMojiSource) -> Path:
    """The unpacked package folder (holding ``data/openmoji.json``), fetched when needed."""
    if source.local_dir is not None:
        for candidate in (source.local_dir, source.local_dir / "package"):
            if (candidate / DATA_FILE).is_file():
                return candidate
        tarballs = sorted(source.local_dir.glob("openmoji-*.tgz"))
        if not tarballs:
            raise InvalidInput(
                f"{source.local_dir} holds neither {DATA_FILE} nor openmoji-*.tgz; pass the "
                "unpacked openmoji npm package, or leave --data-dir out to fetch it with npm"
            )
        return _unpack(tarballs[-1], source.cache_dir / tarballs[-1].stem)
    unpacked = source.cache_dir / f"openmoji-{source.version}" / "package"
    if (unpacked / DATA_FILE).is_file():
        return unpacked
    return _unpack(_npm_pack(source), unpacked.parent)


def read_emoji(package: Path) -> pd.DataFrame:
    """hexcode, group, subgroup, title of each base emoji (no skin tones) with a colour SVG."""
    rows = json.loads((package / DATA_FILE).read_text(encoding="utf-8"))
    frame = pd.DataFrame(rows)
    frame = frame[frame["skintone"].astype(str) == ""]
    svg_dir = package / "color" / "svg"
    frame = frame[[(svg_dir / f"{h}.svg").is_file() for h in frame["hexcode"]]]
    if frame.empty:
        raise InvalidInput(f"no colour SVG under {svg_dir} matches {package / DATA_FILE}")
    columns = {"hexcode": "hexcode", "group": "group", "subgroups": "subgroup"}
    out = frame[list(columns)].rename(columns=columns)
    out["title"] = frame["annotation"].astype(str)
    return out.sort_values("hexcode").reset_index(drop=True)


def _rsvg() -> str:
    rsvg = shutil.which("rsvg-convert")
    if rsvg is None:
        raise DatasetUnavailable(
            "rsvg-convert (librsvg) is not installed; it rasterises the SVGs: "
            "apt-get install librsvg2-bin (or run scripts/system_packages.sh as root)"
        )
    return rsvg


def rasterise(svg: Path, png: Path, side: int, rsvg: str) -> None:
    """One SVG as a ``side`` x ``side`` RGB PNG on white."""
    cmd = [rsvg, "-w", str(side), "-h", str(side), "-b", "white", str(svg)]
    done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        raise InvalidInput(f"rsvg-convert could not rasterise {svg}: {done.stderr[-300:]!r}")
    with Image.open(io.BytesIO(done.stdout)) as img:
        img.convert("RGB").save(png)


def _write_pngs(package: Path, hexcodes: list[str], folder: Path, show_progress: bool) -> None:
    rsvg, svg_dir = _rsvg(), package / "color" / "svg"

    def one(h: str) -> None:
        rasterise(svg_dir / f"{h}.svg", folder / f"{h}.png", SIDE, rsvg)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        jobs = pool.map(one, hexcodes)
        for _ in tqdm(
            jobs, total=len(hexcodes), desc="PNGs", unit="img", disable=not show_progress
        ):
            pass


def prepare_openmoji(
    out_dir: str | os.PathLike[str],
    source: OpenMojiSource | None = None,
    show_progress: bool = True,
) -> PrepareSummary:
    """Write OpenMoji into ``out_dir``: images/<hexcode>.png (72 px, RGB on white), items.csv
    (item_id, image, title), labels.csv (item_id, group, subgroup; for evaluation only) and
    CREDIT.txt (the artwork's licence, which applies to the PNGs)."""
    out_dir = ensure_out_dir(out_dir)
    package = package_dir(source or OpenMojiSource())
    emoji = read_emoji(package)
    ids = "openmoji-" + emoji["hexcode"]
    with atomic_dir(out_dir / "images") as images_dir:
        _write_pngs(package, emoji["hexcode"].tolist(), images_dir, show_progress)
    items = pd.DataFrame({"item_id": ids, "image": "images/" + emoji["hexcode"] + ".png"})
    items["title"] = emoji["title"]
    labels = pd.DataFrame({"item_id": ids, "group": emoji["group"], "subgroup": emoji["subgroup"]})
    (out_dir / "CREDIT.txt").write_text(CREDIT, encoding="utf-8")
    paths = {
        "images": out_dir / "images",
        "items": write_csv(items, out_dir / "items.csv"),
        "labels": write_csv(labels, out_dir / "labels.csv"),
        "credit": out_dir / "CREDIT.txt",
    }
    counts = {
        "images": len(items),
        "groups": emoji["group"].nunique(),
        "subgroups": emoji["subgroup"].nunique(),
    }
    return PrepareSummary(out_dir=out_dir, paths=paths, counts=counts)
