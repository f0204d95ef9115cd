"""mailbox owner identity (tid + oid), provider and transport; session generations; named, expiring API tokens

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 04:30:00

`accounts.token_subject` holds the signed-in identity's permanent ID (Microsoft's `oid`; the tenant is
`tenant_id`), so a reconnect is compared by identity, not by the mutable `preferred_username`. Existing
rows get it from msal's `home_account_id` ("<oid>.<tid>").
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('accounts', sa.Column('provider', sa.String(length=16), nullable=False, server_default='microsoft'))
    op.add_column('accounts', sa.Column('transport', sa.String(length=16), nullable=False, server_default='imap'))
    op.add_column('accounts', sa.Column('token_subject', sa.String(length=255), nullable=False, server_default=''))
    op.add_column('users', sa.Column('session_generation', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('api_tokens', sa.Column('name', sa.String(length=100), nullable=False, server_default=''))
    op.add_column('api_tokens', sa.Column('expires_at', sa.DateTime(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, home_account_id FROM accounts WHERE home_account_id LIKE '%.%'")).all()
    for account_id, home in rows:
        bind.execute(sa.text("UPDATE accounts SET token_subject = :oid WHERE id = :id"),
                     {"oid": home.split(".", 1)[0], "id": account_id})


def downgrade() -> None:
    with op.batch_alter_table('api_tokens') as batch:
        batch.drop_column('expires_at')
        batch.drop_column('name')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('session_generation')
    with op.batch_alter_table('accounts') as batch:
        batch.drop_column('token_subject')
        batch.drop_column('transport')
        batch.drop_column('provider')
