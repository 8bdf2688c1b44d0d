"""What decoding one large photo costs in memory: peak resident memory above the process's
own, for the service's upload decode (search by photo, PUT with a photo) and the training
decode, each photo in a fresh process.

    .venv/bin/python scripts/bench_photo_memory.py [--megapixels 24] [--tree OTHER_CHECKOUT]

Writes a noisy photo of that size as an RGBA PNG, an RGB PNG and a JPEG into a temporary
folder, then decodes each in a new interpreter (``--tree``: with another checkout's code,
to compare two codes on the same files) and prints the peak's growth in MB and the result's
shape. The bytes of the upload itself are read before the baseline is taken.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

_PROBE = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
path, how, side = sys.argv[2], sys.argv[3], int(sys.argv[4])
if how == "upload":
    from services.api import _decode_image
    data = open(path, "rb").read()
    decode = lambda: _decode_image(data, 10**9)
else:
    from recsys.vision.data import _load_one
    decode = lambda: _load_one(__import__("pathlib").Path(path), side, "RGB")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
shape = decode().shape
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"mb": (peak - base) / 1024, "shape": list(shape)}))
"""


def photos(folder: Path, megapixels: float, seed: int = 0) -> dict[str, Path]:
    """The test photos: smooth noise (so that PNG and JPEG compress as real photos do)."""
    height = int((megapixels * 1e6 * 2 / 3) ** 0.5)
    width = int(height * 3 / 2)
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(height // 16 + 1, width // 16 + 1, 4), dtype=np.uint8)
    pixels = np.repeat(np.repeat(small, 16, axis=0), 16, axis=1)[:height, :width]
    made = {
        "RGBA PNG": (pixels, "RGBA", "photo_rgba.png"),
        "RGB PNG": (pixels[..., :3], "RGB", "photo_rgb.png"),
        "RGB JPEG": (pixels[..., :3], "RGB", "photo.jpg"),
    }
    paths = {}
    for name, (array, mode, file) in made.items():
        paths[name] = folder / file
        Image.fromarray(np.ascontiguousarray(array), mode).save(paths[name])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--side", type=int, default=64, help="the training decode's size")
    parser.add_argument(
        "--tree", type=Path, default=Path(__file__).resolve().parent.parent, help="code to run"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        made = photos(Path(folder), args.megapixels)
        print(f"code: {args.tree}; photos of {args.megapixels:g} megapixels")
        for name, path in made.items():
            for how in ("upload", "training"):
                probe = [sys.executable, "-c", _PROBE, str(args.tree), str(path), how]
                out = subprocess.run(
                    [*probe, str(args.side)], capture_output=True, text=True, check=True
                )
                found = json.loads(out.stdout.strip().splitlines()[-1])
                size = path.stat().st_size / 1e6
                print(
                    f"{name:9} ({size:5.1f} MB file), {how:8} decode: "
                    f"+{found['mb']:4.0f} MB peak, {tuple(found['shape'])}"
                )


if __name__ == "__main__":
    main()
