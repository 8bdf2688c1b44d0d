"""`recsys datasets prepare` on the real MovieLens and Fashion-MNIST files; the download path."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import struct
import urllib.request
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from recsys.cli import cli
from recsys.datasets import DatasetUnavailable
from recsys.datasets import fashion_mnist as fm
from recsys.datasets.movielens import load_movielens, prepare_movielens
from recsys.errors import InvalidInput

DEBIAN_DIR = fm.FashionMnistSource().local_dir
needs_debian_fashion_mnist = pytest.mark.skipif(
    not (DEBIAN_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed (apt-get install it)",
)
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"


def recsys(*args, expect_exit: int = 0):
    """Run `recsys ARGS` in-process; returns the click Result."""
    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    if result.exit_code != expect_exit:
        raise AssertionError(
            f"`recsys {' '.join(map(str, args))}` exited {result.exit_code}, expected "
            f"{expect_exit}:\n{result.output}"
        ) from result.exception
    return result


def read_text_csv(path: Path) -> pd.DataFrame:
    """A CSV as the strings a user sees, empty cells as ""."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_idx_gz(path: Path, array: np.ndarray) -> str:
    """Write `array` (uint8) as a gzipped idx file; returns its MD5."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = gzip.compress(header + array.astype(np.uint8).tobytes(), compresslevel=1)
    path.write_bytes(data)
    return hashlib.md5(data).hexdigest()


def fake_test_split(folder: Path) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Official-shaped test split files (10,000 images) that differ from the real ones."""
    folder.mkdir(parents=True, exist_ok=True)
    images = np.zeros((10_000, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(10_000) % 251  # (N,) tells images apart
    labels = (np.arange(10_000) * 7 % 10).astype(np.uint8)
    md5 = {
        TEST_IMAGES: write_idx_gz(folder / TEST_IMAGES, images),
        TEST_LABELS: write_idx_gz(folder / TEST_LABELS, labels),
    }
    return images, labels, md5


# --- MovieLens ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def movielens_dir(tmp_path_factory):
    """`recsys datasets prepare movielens` into a folder that held a stale items.csv."""
    out = tmp_path_factory.mktemp("movielens")
    (out / "items.csv").write_text("stale,file\n")
    result = recsys("datasets", "prepare", "movielens", "--out", out)
    return out, result


def test_movielens_items_one_row_per_movie(movielens_dir):
    out, _ = movielens_dir
    items = read_text_csv(out / "items.csv")
    assert list(items.columns) == ["item_id", "title", "year", "genres"]
    assert len(items) == 9_066
    assert items["item_id"].is_unique
    toy_story = items.set_index("item_id").loc["1"]
    assert toy_story.to_dict() == {
        "title": "Toy Story",
        "year": "1995",
        "genres": "Adventure|Animation|Children|Comedy|Fantasy",
    }
    assert not items["title"].str.contains(r"\(\d{4}\)\s*$").any(), "year left in a title"
    assert (items["title"] == items["title"].str.strip()).all()
    assert items["year"].str.fullmatch(r"\d{4}|").all(), "years are plain integers"


def test_movielens_genres_are_multi_valued_and_never_a_placeholder(movielens_dir):
    out, _ = movielens_dir
    genres = read_text_csv(out / "items.csv")["genres"]
    assert genres.str.contains("|", regex=False).sum() > 4_000
    names = {name for value in genres for name in value.split("|") if value}
    assert {"Drama", "Comedy", "Sci-Fi", "Film-Noir", "IMAX"} <= names
    assert not any("no genres" in name or not name.strip() for name in names)
    assert (genres == "").sum() == 17, "the 17 '(no genres listed)' movies have empty genres"


def test_movielens_interactions_one_row_per_rating(movielens_dir):
    out, _ = movielens_dir
    interactions = pd.read_csv(out / "interactions.csv")
    items = pd.read_csv(out / "items.csv")
    assert list(interactions.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert len(interactions) == 100_004
    assert interactions["user_id"].nunique() == 671
    assert set(interactions["item_id"]) == set(items["item_id"])
    assert not interactions.duplicated(["user_id", "item_id"]).any()
    assert set(interactions["rating"]) == {x / 2 for x in range(1, 11)}
    assert interactions["timestamp"].dtype == np.int64
    first = pd.to_datetime(interactions["timestamp"], unit="s")
    assert first.min().year == 1995 and first.max().year == 2016


def test_movielens_overwrites_and_leaves_no_temporary_files(movielens_dir):
    out, result = movielens_dir
    assert sorted(p.name for p in out.iterdir()) == ["interactions.csv", "items.csv"]
    assert "9,066 items, 100,004 interactions, 671 users" in result.stdout
    assert str(out / "items.csv") in result.stdout


def test_load_movielens_returns_what_is_written(movielens_dir):
    out, _ = movielens_dir
    items, interactions = load_movielens()
    assert items.to_csv(index=False) == (out / "items.csv").read_text()
    assert interactions.to_csv(index=False) == (out / "interactions.csv").read_text()


def test_prepare_movielens_summary(tmp_path):
    summary = prepare_movielens(tmp_path / "new" / "dir")
    assert summary.counts == {"items": 9_066, "interactions": 100_004, "users": 671}
    assert summary.paths["items"] == tmp_path / "new" / "dir" / "items.csv"
    assert summary.paths["interactions"].is_file()


# --- Fashion-MNIST from the Debian package ------------------------------------------------


@pytest.fixture(scope="module")
def real_splits():
    return {split: fm.load_fashion_mnist(split) for split in fm.SPLITS}


@pytest.fixture(scope="module")
def fashion_70(tmp_path_factory):
    out = tmp_path_factory.mktemp("fashion")
    result = recsys("datasets", "prepare", "fashion-mnist", "--out", out, "--limit", 70, "-q")
    return out, result


@needs_debian_fashion_mnist
@pytest.mark.parametrize(
    ("split", "size", "first_labels"),
    [("train", 60_000, [9, 0, 0, 3, 0, 2, 7, 2]), ("test", 10_000, [9, 2, 1, 1, 6, 1, 4, 6])],
)
def test_load_fashion_mnist_full_splits(real_splits, split, size, first_labels):
    images, labels = real_splits[split]
    assert images.shape == (size, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (size,) and labels.dtype == np.int64
    assert labels[:8].tolist() == first_labels
    assert np.bincount(labels).tolist() == [size // 10] * 10, "every class equally often"
    assert images.flags.writeable
    assert 60 < images.mean() < 80, "real clothing pictures, not blank"
    assert len(fm.CLASS_NAMES) == 10 and fm.CLASS_NAMES[9] == "Ankle boot"


@needs_debian_fashion_mnist
def test_fashion_limit_keeps_6_to_1_as_28x28_grayscale_pngs(fashion_70, real_splits):
    out, result = fashion_70
    for split, count in [("train", 60), ("test", 10)]:
        names = sorted(p.name for p in (out / "images" / split).iterdir())
        assert names == [f"{i:05d}.png" for i in range(count)]
        for index, name in enumerate(names):
            with Image.open(out / "images" / split / name) as image:
                assert image.mode == "L" and image.size == (28, 28)
                assert np.array_equal(np.asarray(image), real_splits[split][0][index])
    assert "70 items, 60 train, 10 test" in result.stdout
    assert "img/s" not in result.stderr, "-q hides the progress bar"


@needs_debian_fashion_mnist
def test_fashion_labels_match_the_real_labels(fashion_70, real_splits):
    out, _ = fashion_70
    labels = pd.read_csv(out / "labels.csv")
    assert list(labels.columns) == ["item_id", "label", "label_name", "split"]
    expected = pd.concat(
        pd.DataFrame(
            {
                "item_id": [f"fmnist-{split}-{i:05d}" for i in range(count)],
                "label": real_splits[split][1][:count],
                "split": split,
            }
        )
        for split, count in [("train", 60), ("test", 10)]
    )
    pd.testing.assert_frame_equal(
        labels[["item_id", "label", "split"]], expected.reset_index(drop=True)
    )
    assert (labels["label_name"] == [fm.CLASS_NAMES[x] for x in labels["label"]]).all()


@needs_debian_fashion_mnist
def test_fashion_items_have_images_and_no_labels(fashion_70):
    out, _ = fashion_70
    items = pd.read_csv(out / "items.csv")
    assert list(items.columns) == ["item_id", "image"], "labels must not leak into training"
    assert items["item_id"].tolist() == pd.read_csv(out / "labels.csv")["item_id"].tolist()
    assert items.loc[0].tolist() == ["fmnist-train-00000", "images/train/00000.png"]
    assert items.loc[69].tolist() == ["fmnist-test-00009", "images/test/00009.png"]
    assert all((out / image).is_file() for image in items["image"])


@needs_debian_fashion_mnist
def test_fashion_rerun_with_smaller_limit_leaves_no_stale_files(tmp_path):
    terminal = mock.patch("recsys.commands.datasets.bars", lambda quiet=False: not quiet)
    with terminal:  # stderr a terminal: a bar by default
        result = recsys("datasets", "prepare", "fashion-mnist", "--out", tmp_path, "--limit", 70)
    assert "70/70" in result.stderr, "a progress bar by default"
    logged = recsys("datasets", "prepare", "fashion-mnist", "--out", tmp_path, "--limit", 70)
    assert "70/70" not in logged.stderr, "no bar into a redirected log"
    summary = fm.prepare_fashion_mnist(tmp_path, limit=8, show_progress=False)
    assert summary.counts == {"items": 8, "train": 7, "test": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "items.csv", "labels.csv"]
    assert len(list((tmp_path / "images").rglob("*.png"))) == 8
    assert len(pd.read_csv(tmp_path / "items.csv")) == 8


@pytest.mark.parametrize(("limit", "train"), [(1, 1), (7, 6), (100, 86), (69_999, 59_999)])
def test_split_sizes_keep_6_to_1(limit, train):
    assert fm.split_sizes(limit) == {"train": train, "test": limit - train}
    assert fm.split_sizes(None) == fm.split_sizes(10**6) == {"train": 60_000, "test": 10_000}


# --- Downloading the official files --------------------------------------------------------


@pytest.fixture
def offline_source(tmp_path):
    """A source with no local copy that downloads from a file:// 'server' folder."""
    server = tmp_path / "server"
    server.mkdir()
    return fm.FashionMnistSource(
        local_dir=tmp_path / "not-installed",
        cache_dir=tmp_path / "cache",
        base_url=server.as_uri() + "/",
    )


def test_download_verifies_md5_and_is_cached(offline_source, monkeypatch, tmp_path):
    images, labels, md5 = fake_test_split(tmp_path / "server")
    for name, digest in md5.items():
        monkeypatch.setitem(fm.OFFICIAL_MD5, name, digest)

    got_images, got_labels = fm.load_fashion_mnist("test", offline_source)
    assert np.array_equal(got_images, images) and np.array_equal(got_labels, labels)
    assert sorted(p.name for p in offline_source.cache_dir.iterdir()) == sorted(md5)

    for name in md5:  # the server goes away: the verified cache is enough
        (tmp_path / "server" / name).unlink()
    assert np.array_equal(fm.load_fashion_mnist("test", offline_source)[1], labels)


def test_download_with_wrong_md5_is_refused_and_not_kept(offline_source, tmp_path):
    fake_test_split(tmp_path / "server")  # real OFFICIAL_MD5: these files do not match
    with pytest.raises(InvalidInput, match=r"MD5 [0-9a-f]{32}, expected bef4ecab3"):
        fm.load_fashion_mnist("test", offline_source)
    assert list(offline_source.cache_dir.iterdir()) == []


def test_damaged_cached_file_is_downloaded_again(offline_source, monkeypatch, tmp_path):
    _, labels, md5 = fake_test_split(tmp_path / "server")
    for name, digest in md5.items():
        monkeypatch.setitem(fm.OFFICIAL_MD5, name, digest)
    offline_source.cache_dir.mkdir()
    (offline_source.cache_dir / TEST_LABELS).write_bytes(b"half a file")
    assert np.array_equal(fm.load_fashion_mnist("test", offline_source)[1], labels)


def test_unreachable_server_says_what_to_do(offline_source):
    with pytest.raises(DatasetUnavailable, match=r"could not download file://.*t10k-images"):
        fm.load_fashion_mnist("test", offline_source)


def test_default_download_uses_the_official_url(monkeypatch, tmp_path):
    """The real HTTP path, with the URL opener replaced by one serving fake bytes."""
    _, _, md5 = fake_test_split(tmp_path / "files")
    for name, digest in md5.items():
        monkeypatch.setitem(fm.OFFICIAL_MD5, name, digest)
    requested = []

    def fake_urlopen(url, timeout):
        requested.append(url)
        return io.BytesIO((tmp_path / "files" / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    source = fm.FashionMnistSource(local_dir=tmp_path / "none", cache_dir=tmp_path / "cache")
    assert fm.load_fashion_mnist("test", source)[0].shape == (10_000, 28, 28)
    assert requested == [
        f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{name}"
        for name in (TEST_IMAGES, TEST_LABELS)
    ]


# --- Errors a user can act on ------------------------------------------------------------

_GOOD_IMAGES = np.zeros((60_000, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda p: p.write_bytes(b"not gzip at all"), "cannot be decompressed"),
        (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(12))), "magic number"),
        (
            lambda p: p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-100])),
            "holds 47039900 bytes",
        ),
        (lambda p: p.write_bytes(p.read_bytes()[:-1000]), "cannot be decompressed"),
        (lambda p: write_idx_gz(p, np.zeros((60_000, 32, 32))), "expected (60000, 28, 28)"),
    ],
    ids=["not-gzip", "bad-magic", "truncated-data", "truncated-gzip", "wrong-size"],
)
def test_corrupt_idx_is_refused_with_a_clear_message(tmp_path, corrupt, message):
    data = tmp_path / "idx"
    data.mkdir()
    write_idx_gz(data / "train-images-idx3-ubyte.gz", _GOOD_IMAGES)
    write_idx_gz(data / "train-labels-idx1-ubyte.gz", np.zeros(60_000, dtype=np.uint8))
    corrupt(data / "train-images-idx3-ubyte.gz")
    out = tmp_path / "out"

    result = recsys(
        "datasets", "prepare", "fashion-mnist", "--out", out, "--data-dir", data, expect_exit=2
    )
    assert f"error: {data / 'train-images-idx3-ubyte.gz'} is not a usable" in result.stderr
    assert message in result.stderr
    assert "--reinstall dataset-fashion-mnist" in result.stderr
    assert not (out / "items.csv").exists() and not (out / "images").exists()


def test_out_that_is_a_file_is_refused(tmp_path):
    out = tmp_path / "taken"
    out.write_text("")
    result = recsys("datasets", "prepare", "movielens", "--out", out, expect_exit=2)
    assert "is a file" in result.output
    with pytest.raises(InvalidInput, match="is an existing file; pass a folder"):
        prepare_movielens(out)
    with pytest.raises(InvalidInput, match="is an existing file"):
        fm.prepare_fashion_mnist(out, limit=1, show_progress=False)


@pytest.mark.parametrize("limit", [0, -5])
def test_limit_below_one_is_refused(tmp_path, limit):
    result = recsys(
        "datasets", "prepare", "fashion-mnist", "--out", tmp_path, "--limit", limit, expect_exit=2
    )
    assert "--limit" in result.output and "x>=1" in result.output
    with pytest.raises(InvalidInput, match=f"limit {limit} keeps no images"):
        fm.prepare_fashion_mnist(tmp_path, limit=limit)
    assert list(tmp_path.iterdir()) == []


def test_unknown_dataset_and_misplaced_options_are_refused(tmp_path):
    result = recsys("datasets", "prepare", "cifar", "--out", tmp_path, expect_exit=2)
    assert "'cifar' is not one of 'movielens', 'fashion-mnist'" in result.output
    result = recsys(
        "datasets", "prepare", "movielens", "--out", tmp_path, "--limit", 5, expect_exit=2
    )
    assert "fashion-mnist only" in result.output


def test_help_says_what_gets_written():
    assert "prepare" in recsys("datasets", "--help").output
    text = recsys("datasets", "prepare", "--help").output
    for written in ["items.csv", "interactions.csv", "labels.csv", "images/train/00000.png"]:
        assert written in text
    assert re.search(r"evaluation\s+only", text)
