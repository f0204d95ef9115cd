"""raw mail fetched by the sync kept in pack files next to the SQLite database

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 08:30:00

With `blobs.pack` set, the bytes are at `pack_offset` in `<database>-blobs/<pack>.pack` rather than
in `data` (which is then empty). Only the embedded SQLite database uses packs (see
connector/blobs.py); existing rows keep their bytes in the table.
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('blobs', sa.Column('pack', sa.String(length=64), nullable=True))
    op.add_column('blobs', sa.Column('pack_offset', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    packed = op.get_bind().execute(sa.text("SELECT count(*) FROM blobs WHERE pack IS NOT NULL")).scalar()
    if packed:
        raise RuntimeError(f"{packed} blobs are kept in pack files next to the database; this downgrade would "
                           "lose them. Copy each into blobs.data (and clear pack) first.")
    with op.batch_alter_table('blobs') as batch:
        batch.drop_column('pack_offset')
        batch.drop_column('pack')
