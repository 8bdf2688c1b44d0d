"""A photo is seen as a browser shows it, by training and embedding and by visual search
alike; a file that would decode to too many pixels is left out of training and refused by the
service before any pixel is decoded."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image, ImageOps, PngImagePlugin

from recsys.errors import InvalidInput
from recsys.vision import data as data_module
from recsys.vision.cache import decoded_images
from recsys.vision.data import load_image_files
from recsys.vision.photo import check_photo
from recsys.vision.recipe import survey_images
from services.api import _decode_image
from services.errors import ApiError

ORIENTATION = 0x0112


@pytest.fixture
def upright() -> np.ndarray:
    """(96, 64, 3): a photo whose top and bottom, left and right differ."""
    pixels = np.zeros((96, 64, 3), np.uint8)
    pixels[:32] = (220, 30, 30)  # red top
    pixels[32:, :32] = (30, 30, 220)  # blue bottom left
    pixels[32:, 32:] = (30, 200, 30)  # green bottom right
    return pixels


def _saved(path, pixels, **options):
    Image.fromarray(pixels).save(path, **options)
    return path


def _sideways(path, pixels):
    """A phone's photo: stored turned a quarter to the left, with the EXIF orientation (6)
    that tells a viewer to turn it back."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    return _saved(path, np.ascontiguousarray(np.rot90(pixels)), quality=95, exif=exif)


def _search_decode(path, size: int = 64) -> np.ndarray:
    """(size, size, 3): an upload decoded as a visual search decodes it for an encoder of
    input ``size``."""
    return _decode_image(path.read_bytes(), 25_000_000, size)[0]


def test_a_phone_photo_stored_sideways_is_seen_upright_everywhere(upright, tmp_path):
    plain = _saved(tmp_path / "upright.jpg", upright, quality=95)
    sideways = _sideways(tmp_path / "sideways.jpg", upright)
    decoded = load_image_files([plain, sideways], 32, 3).numpy().astype(int)
    assert np.abs(decoded[0] - decoded[1]).mean() < 3  # training and embedding
    searched = _search_decode(sideways, 32).astype(int)
    assert np.abs(searched - decoded[0].transpose(1, 2, 0)).mean() < 3  # visual search
    assert np.abs(_search_decode(plain, 32).astype(int) - searched).mean() < 3


def test_a_16_bit_photo_keeps_its_grey_levels(tmp_path):
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint16), (64, 1))  # (64, 64), 0..252
    path = tmp_path / "deep.png"
    Image.fromarray(grey * 257).save(path)  # 16-bit samples: PIL opens it as I;16
    assert Image.open(path).mode.startswith("I")
    decoded = load_image_files([path], 64, 1).numpy()[0, 0].astype(int)
    assert np.abs(decoded - grey).max() <= 1  # not clipped to black and white
    searched = _search_decode(path).astype(int)
    assert np.abs(searched[..., 0] - grey).max() <= 1


def test_a_cut_out_photo_is_searched_on_white_as_it_was_trained(tmp_path):
    cutout = np.zeros((64, 64, 4), np.uint8)  # transparent black around a red square
    cutout[16:48, 16:48] = (200, 0, 0, 255)
    path = tmp_path / "cutout.png"
    Image.fromarray(cutout, "RGBA").save(path)
    assert load_image_files([path], 64, 3).numpy()[0, :, 0, 0].tolist() == [255, 255, 255]
    searched = _search_decode(path)
    assert searched[0, 0].tolist() == [255, 255, 255] and searched[32, 32].tolist() == [200, 0, 0]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_decompression_bomb_is_left_out_of_training_and_refused_by_the_service(
    upright, tmp_path, monkeypatch
):
    """PIL's limit lowered so that a small photo counts as a bomb: over twice the limit PIL
    itself refuses to open it; between once and twice, the decoder refuses to decode it."""
    fine = _saved(tmp_path / "fine.png", upright[:40, :40])  # 1,600 pixels
    over = _saved(tmp_path / "over.png", upright[:60, :60])  # 3,600
    bomb = _saved(tmp_path / "bomb.png", upright)  # 6,144
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    left_out: list[int] = []
    data = decoded_images([fine, over, bomb], 16, 3, unreadable=left_out)
    assert left_out == [1, 2] and data[0].any() and not data[1:].any()
    for path in (over, bomb):
        with pytest.raises(InvalidInput, match=path.name):
            decoded_images([fine, path], 16, 3)
    with pytest.raises(InvalidInput, match=r"is over 0 megapixels; send at most 0\.005"):
        check_photo(bomb, 5000)
    with pytest.raises(ApiError) as refused:
        _decode_image(bomb.read_bytes(), 5000)
    assert refused.value.status == 400 and "image: is over" in refused.value.message


def test_the_service_takes_the_formats_and_sizes_it_names(upright, tmp_path):
    assert check_photo(_saved(tmp_path / "a.webp", upright), 10_000) == "WEBP"
    with pytest.raises(InvalidInput, match=r"is 64x96 pixels; send at most 0\.005 megapixels"):
        check_photo(_saved(tmp_path / "b.png", upright), 5000)
    for name in ("c.tiff", "d.bmp"):
        with pytest.raises(InvalidInput, match=r"not a readable image \(send PNG, JPEG"):
            check_photo(_saved(tmp_path / name, upright), 10_000)
    with pytest.raises(InvalidInput, match="not a readable image"):
        check_photo(io.BytesIO(b"not an image"), 10_000)


def test_a_large_photo_is_reduced_first_and_seen_as_at_full_size(tmp_path):
    """A photo many times the sizes asked is reduced before it is turned and put on white
    (to spare a worker's memory): what training and visual search see is what turning,
    compositing and resizing it at full size gives."""
    rows, cols = np.mgrid[0:1200, 0:1800]
    pixels = np.zeros((1200, 1800, 4), np.uint8)
    pixels[..., 0] = rows * 255 // 1199  # red grows downwards, green rightwards
    pixels[..., 1] = cols * 255 // 1799
    pixels[..., 2] = 90
    pixels[..., 3] = np.where((rows // 300 + cols // 300) % 2 == 0, 255, 0)  # cut-out squares
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored a quarter turned, as a phone does
    path = tmp_path / "large.png"
    Image.fromarray(pixels, "RGBA").save(path, exif=exif)

    with Image.open(path) as full:
        upright = ImageOps.exif_transpose(full).convert("RGBA")
    white = Image.new("RGBA", upright.size, (255,) * 4)
    reference = Image.alpha_composite(white, upright).convert("RGB")
    assert reference.size == (1200, 1800)

    trained = load_image_files([path], 48, 3).numpy()[0].transpose(1, 2, 0).astype(int)
    expected = np.asarray(reference.resize((48, 48), Image.Resampling.BILINEAR), int)
    assert np.abs(trained - expected).mean() < 2
    assert (_search_decode(path, 48) == trained).all()  # the same pixels as training's


def test_a_photo_with_a_damaged_exif_block_is_shown_as_stored(upright, tmp_path):
    """A 4-byte EXIF block (struct.error in PIL) stopped a whole image training and was a
    500 in search by photo; its pixels are fine."""
    path = _saved(tmp_path / "short-exif.png", upright, exif=b"II*\x00")
    plain = _saved(tmp_path / "plain.png", upright)
    assert (load_image_files([path], 32, 3) == load_image_files([plain], 32, 3)).all()
    assert (_search_decode(path) == _search_decode(plain)).all()


def test_photos_pil_cannot_decode_are_left_out_and_refused_by_name(upright, tmp_path):
    """A PNG text chunk that inflates past PIL's limit raises ValueError, which training
    did not catch: the whole run stopped. A FIFO in a photo's place hung it."""
    fine = _saved(tmp_path / "fine.png", upright)
    info = PngImagePlugin.PngInfo()
    info.add_text("note", "x" * (PngImagePlugin.MAX_TEXT_CHUNK + 1), zip=True)
    inflating = _saved(tmp_path / "inflating.png", upright, pnginfo=info)
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    left_out: list[int] = []
    data = decoded_images([fine, inflating, fifo], 16, 3, unreadable=left_out)
    assert left_out == [1, 2] and data[0].any() and not data[1:].any()
    for path, says in (
        (inflating, "Decompressed data too large"),
        (fifo, "it is not a regular file"),
    ):
        with pytest.raises(InvalidInput, match=f"{path.name}: {says}"):
            decoded_images([fine, path], 16, 3)
    # the survey that sizes the training views reads headers first: it hung on the FIFO
    assert survey_images([fine, fifo, fine], skip_unreadable=True).side == 64
    with pytest.raises(InvalidInput, match=r"fifo\.png: it is not a regular file"):
        survey_images([fine, fifo])
    with pytest.raises(ApiError) as refused:
        _decode_image(inflating.read_bytes(), 10**6)
    assert refused.value.status == 400 and "image: is not a readable image" in refused.value.message


def test_training_decodes_no_photo_over_the_services_cap(upright, tmp_path, monkeypatch):
    """A 330 KB PNG of 1 x 85,000,000 pixels (under PIL's 89-megapixel limit) took a training
    run to 4 GB: catalog photos are decoded at most at the service's default cap."""
    monkeypatch.setattr(data_module, "MAX_PHOTO_PIXELS", 5000)
    wide = _saved(tmp_path / "wide.png", np.tile(upright[:1], (1, 100, 1)))  # 1 x 6,400
    left_out: list[int] = []
    decoded_images([wide], 16, 3, unreadable=left_out)
    assert left_out == [0]
    with pytest.raises(InvalidInput, match=r"wide.png: 6400x1 pixels is over the 0.005 mega"):
        decoded_images([wide], 16, 3)
