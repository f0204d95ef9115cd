"""post-import mark: up to which UID a mailbox's post-import action is known to have run

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 08:00:00

A move or delete runs after its batch's commit; a worker killed in between left the mails in the folder,
imported, for good. `accounts.post_import_done_uid` lets the next pass run the action for them
(connector/sync/post_import.py). NULL (every existing mailbox) means "start from last_uid".
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('accounts', sa.Column('post_import_done_uid', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('accounts') as batch:
        batch.drop_column('post_import_done_uid')
