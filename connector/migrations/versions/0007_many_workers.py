"""many workers: the workers table, fencing tokens on mailbox and outbox leases, a generic sync cursor

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 09:00:00

`accounts.lease_token` and `outbox.lease_token` are raised by every claim: a commit checks the token it
claimed with, so a worker that lost its lease cannot write. `workers` holds the live worker processes
(heartbeats). `accounts.sync_cursor` and `import_failures.message_key` are for transports whose position
and message ids are strings (Microsoft Graph's delta link and message ids); IMAP keeps UIDVALIDITY + UID,
which become nullable in `import_failures` for them.
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'workers',
        sa.Column('id', sa.String(length=120), nullable=False),
        sa.Column('hostname', sa.String(length=255), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('heartbeat_at', sa.DateTime(), nullable=False),
        sa.Column('mailboxes', sa.Integer(), nullable=False),
        sa.Column('stopping', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_workers_heartbeat_at', 'workers', ['heartbeat_at'])
    op.add_column('accounts', sa.Column('lease_token', sa.BigInteger(), nullable=False, server_default=sa.text('0')))
    op.add_column('accounts', sa.Column('sync_cursor', sa.Text(), nullable=True))
    op.add_column('outbox', sa.Column('lease_token', sa.BigInteger(), nullable=False, server_default=sa.text('0')))
    with op.batch_alter_table('import_failures') as batch:
        batch.add_column(sa.Column('message_key', sa.String(length=255), nullable=True))
        batch.alter_column('uidvalidity', existing_type=sa.BigInteger(), nullable=True)
        batch.alter_column('uid', existing_type=sa.BigInteger(), nullable=True)
        batch.create_unique_constraint('uq_import_failures_key', ['account_id', 'message_key'])


def downgrade() -> None:
    op.execute("DELETE FROM import_failures WHERE uid IS NULL OR uidvalidity IS NULL")
    with op.batch_alter_table('import_failures') as batch:
        batch.drop_constraint('uq_import_failures_key', type_='unique')
        batch.alter_column('uid', existing_type=sa.BigInteger(), nullable=False)
        batch.alter_column('uidvalidity', existing_type=sa.BigInteger(), nullable=False)
        batch.drop_column('message_key')
    with op.batch_alter_table('outbox') as batch:
        batch.drop_column('lease_token')
    with op.batch_alter_table('accounts') as batch:
        batch.drop_column('sync_cursor')
        batch.drop_column('lease_token')
    op.drop_index('ix_workers_heartbeat_at', table_name='workers')
    op.drop_table('workers')
