"""Decoded images are cached: the cache gives the tensors decoding gives, and decodes once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from recsys.errors import InvalidInput
from recsys.vision import ImageEncoder, ImageEncoderConfig, MethodConfig, TrainConfig
from recsys.vision import cache as cache_module
from recsys.vision.cache import decoded_images
from recsys.vision.data import load_image_files


@pytest.fixture
def photos(tmp_path) -> list:
    """Eight real-size-ish colour photos: JPEGs of two sizes and a transparent PNG."""
    rng = np.random.default_rng(1)
    paths = []
    for i in range(8):
        pixels = rng.integers(0, 256, size=(120 + 10 * i, 100, 3), dtype=np.uint8)
        paths.append(tmp_path / f"{i}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    cutout = np.zeros((60, 60, 4), np.uint8)
    cutout[20:40, 20:40] = (200, 0, 0, 255)  # a red square on a transparent background
    paths.append(tmp_path / "cutout.png")
    Image.fromarray(cutout, "RGBA").save(paths[-1])
    return paths


def _no_decoding(*args, **kwargs):
    raise AssertionError("decoded again")


def test_cache_gives_the_same_tensors_as_decoding_and_decodes_once(photos, tmp_path, monkeypatch):
    decoded = load_image_files(photos, 32, 3)  # (N, 3, 32, 32)
    first = decoded_images(photos, 32, 3, tmp_path / "cache")
    monkeypatch.setattr(cache_module, "decode_into", _no_decoding)
    again = decoded_images(photos, 32, 3, tmp_path / "cache")
    assert first.dtype == again.dtype == torch.uint8 and first.shape == (9, 3, 32, 32)
    assert torch.equal(first, decoded) and torch.equal(again, decoded)


def test_a_changed_file_is_decoded_again(photos, tmp_path):
    decoded_images(photos, 16, 3, tmp_path / "cache")
    Image.new("RGB", (50, 50), (0, 255, 0)).save(photos[0])
    fresh = decoded_images(photos, 16, 3, tmp_path / "cache")
    assert (fresh[0, 1] == 255).all() and (fresh[0, 0] == 0).all()
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_a_retrain_on_changed_files_keeps_two_arrays_not_one_per_run(photos, tmp_path):
    """Each change of the catalog's files writes a new array; the old ones go once unused."""
    import os

    cache = tmp_path / "cache"
    hour_ago = cache_module.KEEP_USED_SECONDS + 60
    for run in range(4):  # a daily retrain: one photo changed each day
        Image.new("RGB", (50, 50), (run * 60, 0, 0)).save(photos[0])
        decoded_images(photos, 16, 3, cache)
        decoded_images(photos, 24, 3, cache)  # another size: not this size's to remove
        for array in cache.glob("*.npy"):  # each run a day after the last
            stamp = array.stat().st_mtime - hour_ago * 24
            os.utime(array, (stamp, stamp))
    assert len(list(cache.glob("images-16px-3ch-*.npy"))) == 2
    assert len(list(cache.glob("images-24px-3ch-*.npy"))) == 2
    fresh = decoded_images(photos, 16, 3, cache)  # the last one is still a hit
    assert torch.equal(fresh, load_image_files(photos, 16, 3))
    # used within the hour (here both, as by two runs on two catalogs): kept
    for array in cache.glob("images-16px-3ch-*.npy"):
        os.utime(array)
    Image.new("RGB", (50, 50), (0, 0, 255)).save(photos[0])
    decoded_images(photos, 16, 3, cache)
    assert len(list(cache.glob("images-16px-3ch-*.npy"))) == 3


def test_large_catalogs_are_memory_mapped(photos, monkeypatch):
    monkeypatch.setattr(cache_module, "IN_MEMORY_BYTES", 100)
    assert isinstance(cache_module._scratch((9, 3, 16, 16)), np.memmap)
    assert not isinstance(cache_module._scratch((1, 3, 4, 4)), np.memmap)
    assert torch.equal(decoded_images(photos, 16, 3), load_image_files(photos, 16, 3))


def test_transparent_pixels_become_white_and_jpegs_decode_close_to_full_size(photos):
    cutout = load_image_files(photos[-1:], 30, 3)[0]  # (3, 30, 30)
    assert (cutout[:, 0, 0] == 255).all() and cutout[0, 15, 15] > 150 > cutout[1, 15, 15]
    with Image.open(photos[0]) as img:  # reference: full decode, then resize
        full = np.asarray(img.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
    fast = load_image_files(photos[:1], 32, 3)[0].permute(1, 2, 0).numpy()
    assert np.abs(fast.astype(int) - full).mean() < 8


def test_fit_then_transform_decodes_the_files_once(photos, monkeypatch):
    calls = []
    real = cache_module.decode_into
    monkeypatch.setattr(
        cache_module, "decode_into", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    cfg = ImageEncoderConfig(
        backbone="small_cnn",
        width=4,
        input_size=16,
        heads=MethodConfig(hidden_dim=16, proj_dim=8),
        train=TrainConfig(epochs=1, batch_size=4),
    )
    enc = ImageEncoder(cfg, device="cpu").fit(photos)
    assert enc.transform(photos).shape == (9, 32)
    assert len(calls) == 1


def test_an_unreadable_photo_is_named_or_left_out_as_asked(photos, tmp_path):
    """Strict decoding names the file; a catalog's training leaves it out (a black row, a
    zero vector) and goes on, with or without the cache, which remembers it."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(photos[-1].read_bytes()[:60])  # a truncated file
    paths = [*photos, broken]
    with pytest.raises(InvalidInput, match=r"broken\.png"):
        decoded_images(paths, 16, 3)
    for cache_dir in (None, tmp_path / "cache", tmp_path / "cache"):  # decoded, then cached
        left_out: list[int] = []
        data = decoded_images(paths, 16, 3, cache_dir, unreadable=left_out)
        assert left_out == [len(photos)] and not data[-1].any()
        assert torch.equal(data[:-1], load_image_files(photos, 16, 3))
    with pytest.raises(InvalidInput, match=r"broken\.png"):  # strict, from the cache too
        decoded_images(paths, 16, 3, tmp_path / "cache")
    config = ImageEncoderConfig(
        input_size=16, channels=3, width=8, train=TrainConfig(epochs=1, batch_size=4)
    )
    encoder = ImageEncoder(config, device="cpu", skip_unreadable=True).fit(paths)
    vectors = encoder.transform(paths)
    assert not vectors[-1].any() and np.linalg.norm(vectors[:-1], axis=1) == pytest.approx(1)


def test_a_missing_photo_is_left_out_as_an_unreadable_one(photos, tmp_path):
    """A photo file gone from disk (another shop's delete, a cleanup) stopped the whole
    training at the cache's key ("cannot read image ...: No such file") although a catalog's
    training leaves unreadable photos out."""
    gone = tmp_path / "gone.png"
    paths = [*photos, gone]
    with pytest.raises(InvalidInput, match=r"gone\.png"):
        decoded_images(paths, 16, 3, tmp_path / "cache")  # strict: named
    left_out: list[int] = []
    data = decoded_images(paths, 16, 3, tmp_path / "cache", unreadable=left_out)
    assert left_out == [len(photos)] and not data[-1].any()
