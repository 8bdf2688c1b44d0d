"""A tiny trained shop for the service tests: the toy catalog plus images, trained once.

Comedy items (a*) are bright squares, drama items (b*) dark rings, so visual search and
similar items have something to find; ``a-new``/``b-new`` have no interactions (cold).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from recsys.catalog import connect, migrate
from recsys.catalog.models import Interaction, Item, ItemAttribute, User
from recsys.model.cf import CFConfig
from recsys.model.training import TrainConfig, WeightGrid, train
from recsys.vision import ImageEncoder
from recsys.vision.encoder import ImageEncoderConfig
from recsys.vision.train import TrainConfig as ImageTrainConfig
from tests.toy import toy_catalog


def item_image(group: str, k: int) -> np.ndarray:
    """28x28 uint8: a bright square (a) or a ring (b), sized by k."""
    yy, xx = np.mgrid[:28, :28]
    size = 5 + k % 6
    if group == "a":
        pixels = (abs(yy - 14) < size) & (abs(xx - 14) < size)
    else:
        radius = np.hypot(yy - 14, xx - 14)
        pixels = (radius > size) & (radius < size + 3)
    return np.where(pixels, 230, 20).astype(np.uint8)


def populate(engine, images_dir: Path | None = None) -> None:
    """The toy catalog in the database; with ``images_dir``, each item gets a PNG there."""
    data = toy_catalog()
    if images_dir is not None:
        images_dir.mkdir(parents=True, exist_ok=True)
    with Session(engine) as session, session.begin():
        for name, kind in data.kinds.items():
            session.add(ItemAttribute(name=name, kind=kind))
        items = {}
        for n, row in enumerate(data.items.to_dict("records")):
            image_path = None
            if images_dir is not None:
                path = images_dir / f"{row['item_id']}.png"
                Image.fromarray(item_image(row["item_id"][0], n)).save(path)
                image_path = str(path.resolve())
            attributes = {k: row[k] for k in data.kinds}
            attributes["genres"] = attributes["genres"].split("|")
            items[row["item_id"]] = Item(
                external_id=row["item_id"], title=row["title"], in_stock=row["in_stock"],
                attributes=attributes, image_path=image_path,
            )  # fmt: skip
        users = {u: User(external_id=u) for u in data.interactions["user_id"].unique()}
        session.add_all([*items.values(), *users.values()])
        for k, row in enumerate(data.interactions.to_dict("records")):
            session.add(
                Interaction(
                    user=users[row["user_id"]], item=items[row["item_id"]], event=row["event"],
                    weight=row["weight"], timestamp=row["timestamp"].to_pydatetime(),
                    dedup_key=f"k{k}",
                )
            )  # fmt: skip


def relist(engine, item_id: str, copy_id: str, title: str | None = None) -> None:
    """A seller lists ``item_id`` again as ``copy_id``: same title (or ``title``),
    attributes and photo, no events."""
    with Session(engine) as session, session.begin():
        source = session.scalar(select(Item).where(Item.external_id == item_id))
        session.add(
            Item(
                external_id=copy_id,
                title=source.title if title is None else title,
                attributes=dict(source.attributes),
                image_path=source.image_path,
                in_stock=True,
            )
        )


def variants(engine) -> None:
    """Each item its own product (attribute ``style``, its id) but ``a3-m``, a3's medium
    size (another item with a3's title, photo and style); and two re-listings, ``a1-again``
    under another style and ``b2-again`` under none."""
    with Session(engine) as session, session.begin():
        session.add(ItemAttribute(name="style", kind="categorical"))
        for item in session.scalars(select(Item)):
            item.attributes = {**item.attributes, "style": item.external_id}
    for source, copy, style in (("a3", "a3-m", "a3"), ("a1", "a1-again", "a1-again")):
        relist(engine, source, copy)
        with Session(engine) as session, session.begin():
            item = session.scalar(select(Item).where(Item.external_id == copy))
            item.attributes = {**item.attributes, "style": style}
    relist(engine, "b2", "b2-again")
    with Session(engine) as session, session.begin():
        item = session.scalar(select(Item).where(Item.external_id == "b2-again"))
        item.attributes = {k: v for k, v in item.attributes.items() if k != "style"}


def tiny_encoder() -> ImageEncoder:
    config = ImageEncoderConfig(
        backbone="small_cnn", width=4, train=ImageTrainConfig(epochs=2, batch_size=8, seed=0)
    )
    return ImageEncoder(config, device="cpu")


def train_config() -> TrainConfig:
    # min_users 2: the toy's few shoppers still run the weights stage (the default keeps
    # the defaults below 50 validation users)
    return TrainConfig(
        cf=CFConfig(factors=8, regularization=0.5),
        validation_share=0.25,
        grid=WeightGrid(min_users=2, factors=()),  # the toy's 8 factors, not 64 tried too
    )


def build_shop(
    root: Path,
    database_url: str | None = None,
    prepare: Callable | None = None,
    photos: bool = True,
    config: TrainConfig | None = None,
) -> tuple[str, Path]:
    """Migrate, populate and train under ``root`` -> (database URL, artifacts dir);
    ``prepare(engine)`` edits the catalog before the training; ``config``: the training's
    (default ``train_config()``)."""
    url = database_url or f"sqlite:///{root / 'shop.db'}"
    engine = connect(url)
    migrate.upgrade(engine)
    populate(engine, root / "images" if photos else None)
    if prepare is not None:
        prepare(engine)
    config = config or train_config()
    train(engine, root / "artifacts", config, "cpu", image_encoder_factory=tiny_encoder)
    engine.dispose()
    return url, root / "artifacts"


# The service over a built shop: the admin token is an API key with every scope
# (tests/test_keys.py covers scoped keys).
ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def service_app(shop: tuple[str, Path], **settings):
    """The Flask app over ``build_shop``'s (url, artifacts), no bundle watcher."""
    from recsys.settings import Settings
    from services.app import create_app

    url, artifacts = shop
    full = Settings(database_url=url, artifacts_dir=artifacts, admin_token=ADMIN_TOKEN, **settings)
    # No background threads: a test that edits the catalog follows it itself (holder.follow).
    config = {"TESTING": True, "RELOAD_CHECK_SECONDS": 0, "LIVE_CATALOG_SECONDS": 0}
    return create_app(full, config)
