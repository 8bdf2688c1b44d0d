"""One photo as the product sees it: what the service takes (``check_photo``: format and
size from the header, before any pixel is decoded) and how every path decodes it
(``as_shown``: upright, 8 bits, transparent pixels on white), for training, embedding, visual
search and item writes alike. No torch here: the ingest and service code import it."""

from __future__ import annotations

import os
import stat
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps

from recsys.errors import InvalidInput
from recsys.memory import trim_c_heap

# A damaged EXIF block is read as none (``_orientation``); PIL's own warning of it went to
# stderr with its source line, on every CLI run that embedded the photo.
warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)
# Every path checks a photo's size itself and names the file it refuses (the header's size
# for the service, the size decoded for training); PIL's own warning past 89 megapixels named
# none, and was printed for photos then decoded at a reduced scale or refused anyway.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# What the service takes as a photo (uploads, and image paths written over HTTP), at most
# ``Settings.max_image_pixels`` (RECSYS_MAX_IMAGE_PIXELS, 25 megapixels by default).
PHOTO_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
MAX_PHOTO_PIXELS = 25_000_000
_ORIENTATION = 0x0112  # the EXIF tag of how a camera held the photo (1: upright)
# Modes PIL reduces block by block (with and without alpha: it premultiplies); others (a
# palette, 16 bits) are converted at full size first, as before.
_REDUCIBLE = ("L", "LA", "RGB", "RGBA")


# What PIL raises for a damaged file, beyond OSError (UnidentifiedImageError, a truncated
# file): ValueError (a PNG text chunk inflating past its limit, a palette index out of range),
# struct.error (an EXIF block cut short), SyntaxError (a broken PNG chunk), and the others
# its format plugins raise on bytes they did not expect. One seller's photo with a 4-byte
# EXIF block stopped a whole image training, and was a 500 in search by photo.
DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    TypeError,
    ZeroDivisionError,
    struct.error,
    Image.DecompressionBombError,
)

# Each format's first bytes (WebP: RIFF, then WEBP at byte 8).
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)


def photo_format(path) -> str | None:
    """The format of the photo in the file at ``path`` by its first bytes (one short read,
    about the cost of the file's stat: what an ingest of 10^6 rows can afford per row), or
    None for anything but a PNG, JPEG, WebP or GIF. ``check_photo`` reads the header too."""
    try:
        with open(path, "rb") as file:
            head = file.read(12)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)


def check_photo(source, max_pixels: int) -> str:
    """The format of the photo in ``source`` (a path or a binary file), read from its
    header, no pixel decoded; ``InvalidInput`` saying what is wrong (a sentence to follow the
    field's name) for anything but a PNG, JPEG, WebP or GIF of at most ``max_pixels``."""
    limit = f"send at most {max_pixels / 1e6:g} megapixels"
    try:
        with Image.open(source, formats=PHOTO_FORMATS) as image:
            (width, height), found = image.size, image.format
    except Image.DecompressionBombError:  # PIL's own cap, far above any setting's
        raise InvalidInput(
            f"is over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; {limit}"
        ) from None
    except DECODE_ERRORS:
        raise InvalidInput("is not a readable image (send PNG, JPEG, WebP or GIF)") from None
    if width * height > max_pixels:
        raise InvalidInput(f"is {width}x{height} pixels; {limit}")
    return found


def open_file(path) -> Image.Image:
    """``Image.open`` of a regular file; ``InvalidInput`` naming it for anything else (a FIFO
    put in a photo's place hung a training run)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise InvalidInput(f"cannot read image {path}: it is not a regular file")
    return Image.open(path)


def image_mimetype(path) -> str | None:
    """The media type of the image in the file at ``path``, read from its header (PIL's);
    None when it holds no image PIL knows."""
    try:
        with Image.open(path) as image:
            return Image.MIME.get(image.format or "")
    except DECODE_ERRORS:
        return None


def as_shown(img: Image.Image, mode: str, at_least: int | None = None) -> Image.Image:
    """A decoded photo as a browser shows it, in ``mode`` ("RGB" or "L"): turned upright by
    its EXIF orientation (a phone's photos are stored sideways), 16-bit samples scaled to 8
    bits (PIL's conversion clips them to black and white) and transparent pixels composited
    onto white, as a shop page shows a cut-out product. Training, embedding and visual search
    all see a photo through this one function.

    With ``at_least`` (the side the caller resizes to next), the pixels are first reduced by
    the largest whole factor that leaves both sides at least twice that (a box filter over
    each block, as PIL's own ``reducing_gap`` does before a resize), so that a large photo is
    turned and converted at a fraction of its size: a 24-megapixel PNG cost a service worker
    over 360 MB at its peak (``scripts/bench_photo_memory.py``).
    """
    turned = _orientation(img) != 1
    if at_least and img.mode in _REDUCIBLE:
        factor = min(img.size) // (2 * at_least)
        if factor > 1:
            img = img.reduce(factor)  # keeps the EXIF data, its orientation included
    if turned:
        img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        img = img.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255,) * 4), rgba)
    return img.convert(mode)


def shown_at(img: Image.Image, size: int, mode: str) -> np.ndarray:
    """An opened photo (``draft`` already asked for ``size`` and ``mode``) as the image
    encoder sees every photo, a catalog's file or an upload alike: upright, transparent
    pixels on white (``as_shown``), resized to (size, size) or (size, size, 3) uint8. A
    search upload first shrunk to 256 px its own way found the very photo of an item at
    cosine 0.99, and an up-scaled JPEG at 0.82 where the file scored 0.75."""
    img = as_shown(img, mode, at_least=size)
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), np.uint8)


def _orientation(img: Image.Image) -> int:
    """The photo's EXIF orientation; 1 (as stored) where its EXIF block cannot be read: the
    pixels may still be fine."""
    try:
        return int(img.getexif().get(_ORIENTATION, 1))
    except DECODE_ERRORS:
        return 1


# Photos of more pixels than this give the memory their decode took back to the system.
RELEASE_AFTER_PIXELS = 4_000_000


def release_memory() -> None:
    """Return freed memory to the system (glibc's ``malloc_trim``; elsewhere nothing). A
    service worker that decoded a few 24-megapixel photos kept about 190 MB for good: glibc
    holds what is freed for reuse (``scripts/bench_worker_uss.py --upload``). Called after a
    large photo's decode only, so that no other request pays for it (a fixed mmap threshold
    in every worker gave the memory back too, but made every request that allocates a few MB
    map and unmap them)."""
    trim_c_heap()
