"""Erasing users: a shopper's right to have their data removed.

``erase_users`` deletes users and every event of theirs from the catalog, in one transaction.
What serves is held to it at once, with no state of its own: a feed reads the user's events
stored since the bundle from the catalog anyway (``recsys.serving.fresh_history``), and a user
the bundle knows but the catalog no longer has is answered as one never seen (popularity),
on every worker, from the next request. The next ``recsys train`` leaves them out of the
model; until then the bundle files on disk still hold their factors and history (and their
events shaped the items' factors), so retrain, then remove the older bundles
(``recsys bundles gc``), to finish an erasure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, delete, select

from recsys.catalog.models import Interaction, User
from recsys.errors import InvalidInput
from recsys.ingest.bulk import write_transaction
from recsys.ingest.values import BadValue, parse_id

# Users erased per statement (SQLite binds at most 32,766 values in one).
BATCH = 1_000


@dataclass(frozen=True)
class Erased:
    """What an erasure removed: the users found (in the order asked), their events, and the
    ids the catalog did not have."""

    users: list[str]
    events: int
    unknown: list[str]


def erase_users(engine: Engine, user_ids: Sequence[Any]) -> Erased:
    """Delete the users ``user_ids`` and all their events, all or none; ``InvalidInput``
    naming the first id that is no valid id (nothing is deleted then)."""
    ids = []
    for position, value in enumerate(user_ids):
        try:
            ids.append(parse_id(value, f"user_ids[{position}]"))
        except BadValue as exc:
            raise InvalidInput(f"{exc}; nothing was erased") from None
    ids = list(dict.fromkeys(ids))

    def work(connection: Connection) -> Erased:
        found, events = {}, 0
        for start in range(0, len(ids), BATCH):
            batch = ids[start : start + BATCH]
            rows = connection.execute(
                select(User.id, User.external_id).where(User.external_id.in_(batch))
            ).all()
            keys = [key for key, _ in rows]
            found.update((name, key) for key, name in rows)
            if keys:  # the events explicitly: counted, and not left to the engine's cascade
                gone = connection.execute(delete(Interaction).where(Interaction.user_id.in_(keys)))
                events += gone.rowcount
                connection.execute(delete(User).where(User.id.in_(keys)))
        erased = [name for name in ids if name in found]
        return Erased(erased, events, [name for name in ids if name not in found])

    return write_transaction(engine, work)
