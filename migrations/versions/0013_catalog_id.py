"""A catalog's identity: ``catalog_state.catalog_id``, a random id made once per catalog.

Bundles record the id of the catalog they were trained on, and backups carry it, so that
another shop's bundle is refused by ``recsys bundles register`` and another shop's backup by
``recsys db restore`` (unless asked for): two shops made by the same tools number their items
alike (``sku-000001`` ...), and a bundle or a backup of one was taken for the other's without
a word. A catalog copied (``recsys db copy``) or restored keeps its id, and so does one
downgraded and upgraded again: the downgrade leaves the column (code before it reads no such
column and writes none), since a new id would make the catalog's own bundles and backups
another catalog's.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("catalog_state")}
    if "catalog_id" not in columns:  # else kept by a downgrade, id and all
        op.add_column("catalog_state", sa.Column("catalog_id", sa.String(length=32)))
    op.execute(
        sa.text(
            "UPDATE catalog_state SET catalog_id = :made WHERE id = 1 AND catalog_id IS NULL"
        ).bindparams(made=uuid.uuid4().hex)
    )


def downgrade() -> None:
    pass  # the id stays (see above)
