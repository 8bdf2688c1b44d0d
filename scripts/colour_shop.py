"""The demo shop as a shop of colour product photos: each item's 28 px photo rendered as a
600x800 JPEG product shot in a colour of its own (a random hue, so that colour says nothing
of the product type, as in a shop that sells each product in many colours), on a light
background with a soft shadow and mild JPEG artefacts.

    .venv/bin/recsys datasets prepare fashion-shop --out SHOP --items 2000 --users 400
    .venv/bin/python scripts/colour_shop.py --data SHOP --out COLOUR
    R=".venv/bin/recsys --database-url sqlite:///COLOUR/shop.db --artifacts-dir COLOUR/art"
    $R db upgrade && $R ingest items COLOUR/items.csv --images-root COLOUR
    $R ingest interactions COLOUR/interactions.csv && $R train
    RECSYS_DATABASE_URL=sqlite:///COLOUR/shop.db RECSYS_ARTIFACTS_DIR=COLOUR/art \\
        .venv/bin/python scripts/eval_shop.py --data COLOUR

Writes COLOUR/images/<item>.jpg, COLOUR/items.csv (the image column pointing at them) and
copies interactions.csv, labels.csv and shoppers.csv, so that ``scripts/eval_shop.py`` and
``scripts/similar_parts.py`` score it as the demo shop.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter
from tqdm import tqdm

WIDTH, HEIGHT, SIDE = 600, 800, 560


def shot(photo: Image.Image, seed: int) -> Image.Image:
    """One product shot of the 28 px ``photo`` in the colour ``seed`` draws."""
    rng = np.random.default_rng(seed)
    colour = np.array(
        colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.3, 0.9), rng.uniform(0.45, 0.95))
    )
    big = photo.convert("L").resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    mask = np.asarray(big, dtype=np.float32) / 255.0
    shadow = np.asarray(big.filter(ImageFilter.GaussianBlur(18)), dtype=np.float32) / 255.0
    rows = np.linspace(0.0, 1.0, HEIGHT)[:, None, None]
    background = rng.uniform(228, 250) + rng.uniform(-6, 6, 3) - 10 * rows * rng.uniform(0.3, 1)
    canvas = np.broadcast_to(background, (HEIGHT, WIDTH, 3)).astype(np.float32).copy()
    left, top = (WIDTH - SIDE) // 2, (HEIGHT - SIDE) // 2 + 20
    region = canvas[top : top + SIDE, left : left + SIDE] * (1 - 0.18 * shadow[:, :, None])
    product = colour * 255.0 * (0.35 + 0.65 * mask)[:, :, None]
    alpha = np.clip(mask * 1.6, 0, 1)[:, :, None]
    canvas[top : top + SIDE, left : left + SIDE] = region * (1 - alpha) + product * alpha
    canvas += rng.normal(0, 2.0, canvas.shape)
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=60)  # mild artefacts, then saved again at 85
    return Image.open(buffer).convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared fashion-shop")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    items = pd.read_csv(args.data / "items.csv", dtype=str, keep_default_na=False)
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    images = []
    quiet = not sys.stderr.isatty()  # bars on a terminal only
    rows = tqdm(items.itertuples(), total=len(items), desc="photos", disable=quiet)
    for n, row in enumerate(rows):
        name = f"images/{row.item_id}.jpg"
        if row.image:
            with Image.open(args.data / row.image) as photo:
                shot(photo, args.seed * 1_000_003 + n).save(args.out / name, "JPEG", quality=85)
        images.append(name if row.image else "")
    items.assign(image=images).to_csv(args.out / "items.csv", index=False)
    for name in ("interactions.csv", "labels.csv", "shoppers.csv"):
        shutil.copy(args.data / name, args.out / name)
    print(f"{len(items):,} items written to {args.out}")


if __name__ == "__main__":
    main()
